//! Small request/response servers on the node's own mio loop (control
//! socket, metrics, WireGuard UAPI): accept, read one bounded request,
//! answer, close. Nothing here blocks: reads and writes stop at
//! `WouldBlock` and resume on the next readiness event.
//!
//! Hostile clients cost little and go: at most [`MAX_CLIENTS`] at once
//! (more are accepted and closed at once), a request over the protocol's
//! bound or one the protocol calls garbage closes the connection, and a
//! client that has not sent a whole request within [`REQUEST_TIMEOUT`], or
//! not read its answer within [`ANSWER_TIMEOUT`], is dropped.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

/// Clients served at once, per server.
pub const MAX_CLIENTS: usize = 16;
/// Time a client has to send its whole request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a client has to read the whole answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the protocol makes of the bytes received so far.
pub enum Step {
    /// Not a whole request yet.
    More,
    /// Send this and close.
    Reply(Vec<u8>),
    /// Garbage or over the bound: close without an answer.
    Close,
}

pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Client {
    stream: Stream,
    request: Vec<u8>,
    answer: Vec<u8>,
    sent: usize,
    answering: bool,
    deadline: Instant,
}

/// Counters of what a server did, for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub accepted: u64,
    pub answered: u64,
    /// Closed for garbage, size, silence, or a full client table.
    pub dropped: u64,
}

pub struct Server {
    listener: Listener,
    base: usize,
    clients: Vec<Option<Client>>,
    max_request: usize,
    pub stats: ServerStats,
}

impl Server {
    /// A server whose listener is `Token(base + MAX_CLIENTS)` and whose
    /// clients are `Token(base)..Token(base + MAX_CLIENTS)`.
    pub fn new(listener: Listener, base: usize, max_request: usize) -> Server {
        Server {
            listener,
            base,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            max_request,
            stats: ServerStats::default(),
        }
    }

    pub fn listener_token(&self) -> Token {
        Token(self.base + MAX_CLIENTS)
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        let t = self.listener_token();
        match &mut self.listener {
            Listener::Unix(l) => registry.register(l, t, Interest::READABLE),
            Listener::Tcp(l) => registry.register(l, t, Interest::READABLE),
        }
    }

    /// Whether `token` belongs to this server.
    pub fn owns(&self, token: Token) -> bool {
        (self.base..=self.base + MAX_CLIENTS).contains(&token.0)
    }

    /// Handles a readiness event for one of this server's tokens.
    /// `handle` is asked about each client's bytes until it decides.
    pub fn ready(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
        handle: &mut dyn FnMut(&[u8]) -> Step,
    ) {
        if token == self.listener_token() {
            self.accept(registry, now);
            return;
        }
        let slot = token.0 - self.base;
        let Some(entry) = self.clients.get_mut(slot) else {
            return;
        };
        let Some(client) = entry.as_mut() else {
            return;
        };
        let keep = Self::serve(client, self.max_request, now, handle, &mut self.stats);
        if !keep {
            if let Some(mut c) = entry.take() {
                let _ = registry.deregister(c.stream.source());
            }
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let stream = match &self.listener {
                Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
                Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            };
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::debug!("accept failed: {e}");
                    return;
                }
            };
            self.stats.accepted += 1;
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                // Full: this one is closed as it is dropped.
                self.stats.dropped += 1;
                continue;
            };
            let token = Token(self.base + slot);
            if registry
                .register(
                    stream.source(),
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            if let Some(s) = self.clients.get_mut(slot) {
                *s = Some(Client {
                    stream,
                    request: Vec::new(),
                    answer: Vec::new(),
                    sent: 0,
                    answering: false,
                    deadline: now + REQUEST_TIMEOUT,
                });
            }
        }
    }

    /// Reads, decides, writes; false when the client is done with.
    fn serve(
        c: &mut Client,
        max: usize,
        now: Instant,
        handle: &mut dyn FnMut(&[u8]) -> Step,
        stats: &mut ServerStats,
    ) -> bool {
        if !c.answering {
            let mut buf = [0u8; 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        stats.dropped += 1;
                        return false;
                    }
                    Ok(n) => {
                        c.request.extend_from_slice(&buf[..n]);
                        if c.request.len() > max {
                            stats.dropped += 1;
                            return false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        stats.dropped += 1;
                        return false;
                    }
                }
                match handle(&c.request) {
                    Step::More => {}
                    Step::Close => {
                        stats.dropped += 1;
                        return false;
                    }
                    Step::Reply(answer) => {
                        c.answer = answer;
                        c.answering = true;
                        c.deadline = now + ANSWER_TIMEOUT;
                        stats.answered += 1;
                        break;
                    }
                }
            }
            if !c.answering {
                return true;
            }
        }
        while c.sent < c.answer.len() {
            match c.stream.write(&c.answer[c.sent..]) {
                Ok(0) => return false,
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Drops clients past their deadline; call now and then (each tick).
    pub fn sweep(&mut self, registry: &Registry, now: Instant) {
        for entry in &mut self.clients {
            if entry.as_ref().is_some_and(|c| now >= c.deadline) {
                if let Some(mut c) = entry.take() {
                    let _ = registry.deregister(c.stream.source());
                    self.stats.dropped += 1;
                }
            }
        }
    }
}
