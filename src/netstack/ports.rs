//! Allocation of the identifiers the userspace stack hands out: mio tokens
//! for its host sockets and ephemeral ports for the mesh sockets it opens.
//! Its own struct so that allocating never borrows the rest of the stack.

use std::collections::HashSet;

use mio::Token;

use super::FIRST_TOKEN;

/// First and last ephemeral port (IANA's dynamic range).
const FIRST_PORT: u16 = 49152;

/// Tokens and ephemeral ports.
#[derive(Debug)]
pub(super) struct Alloc {
    next_token: usize,
    ports: HashSet<u16>,
    next_port: u16,
}

impl Alloc {
    pub(super) fn new() -> Alloc {
        Alloc {
            next_token: FIRST_TOKEN,
            ports: HashSet::new(),
            next_port: FIRST_PORT,
        }
    }

    /// A token for a new host socket. Tokens wrap after `usize::MAX`
    /// sockets, far beyond the life of any socket still registered.
    pub(super) fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_TOKEN);
        t
    }

    /// An unused ephemeral port; `None` when all 16,384 are taken.
    pub(super) fn port(&mut self) -> Option<u16> {
        for _ in 0..=(u16::MAX - FIRST_PORT) {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { FIRST_PORT } else { p + 1 };
            if self.ports.insert(p) {
                return Some(p);
            }
        }
        None
    }

    /// Gives a port back.
    pub(super) fn release(&mut self, port: u16) {
        self.ports.remove(&port);
    }

    /// Ports in use.
    #[cfg(test)]
    pub(super) fn ports_in_use(&self) -> usize {
        self.ports.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_until_released_and_run_out() {
        let mut a = Alloc::new();
        let first = a.port().unwrap();
        assert_eq!(first, FIRST_PORT);
        let mut n = 1;
        while a.port().is_some() {
            n += 1;
        }
        assert_eq!(n, 16384, "the whole dynamic range, each port once");
        assert_eq!(a.ports_in_use(), 16384);
        a.release(50000);
        assert_eq!(a.port(), Some(50000), "a released port is reused");
        assert_eq!(a.port(), None);
    }

    #[test]
    fn tokens_start_above_the_daemons_own() {
        let mut a = Alloc::new();
        assert_eq!(a.token(), Token(FIRST_TOKEN));
        assert_eq!(a.token(), Token(FIRST_TOKEN + 1));
    }
}
