//! Inputs that once crashed a fuzz target, kept as named tests so the
//! failure they exposed stays fixed. Each runs through the same entry point
//! as the fuzzer (`umbra::fuzzing`). Add new ones here (and the file under
//! `fuzz/corpus/<target>/`) whenever `scripts/fuzz.sh` prints a reproducer.

use umbra::fuzzing;

/// The replay harness computed "highest accepted + delta" with plain
/// addition; once a counter near u64::MAX was accepted the next jump
/// overflowed (a harness bug: the window itself was right).
#[test]
fn replay_counters_near_u64_max() {
    fuzzing::replay(&[
        3, 0, 0, 5, 0, 100, 0, 255, 255, 9, 100, 255, 255, 255, 255, 200, 255, 199,
    ]);
}

/// The same overflow in the transport harness: a message at the counter
/// limit, then a jump ahead of it.
#[test]
fn transport_counters_near_the_limit() {
    let mut input = Vec::new();
    for (sel, delta) in [(0x60u8, 10u16), (0x40, 0xffff), (0x30, 0xffff)] {
        input.extend_from_slice(&[0, sel]);
        input.extend_from_slice(&delta.to_le_bytes());
        input.extend_from_slice(&[0, 0]);
    }
    fuzzing::transport(&input);
}
