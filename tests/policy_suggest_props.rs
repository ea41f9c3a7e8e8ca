//! Flow logs are untrusted input: whatever the bytes, reading them never
//! panics, every line is either a record or a located error, and suggest
//! and replay run on whatever was read.

mod policy_suggest_support;

use policy_suggest_support::{now, policy, Log};
use proptest::prelude::*;
use umbra::policy::flowlog_agg::Observed;

fn sample() -> String {
    let mut log = Log::default();
    log.flow("web-1", "api-1", 6, 8080, "allow", "web-api");
    log.flow("web-2", "db-1", 6, 5432, "drop", "default-deny");
    log.flow("prom", "api-2", 1, 8, "drop", "default-deny");
    log.flow_via("ops", "gw", "192.168.7.20", 17, 53, "allow", "ops-dns", 99);
    log.text
}

fn check(bytes: &[u8]) {
    let mut o = Observed::new();
    o.read(bytes, "fuzz.log").unwrap();
    let lines = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count() as u64;
    assert_eq!(o.stats.records + o.stats.malformed, lines);
    assert!(o.stats.errors.len() <= 20);
    for e in &o.stats.errors {
        assert!(e.starts_with("fuzz.log:"), "{e}");
    }
    let p = policy("service api role:api tcp/8080\nallow role:web -> api as web-api\n");
    let s = umbra::policy::suggest::suggest(&p, &o, true, now());
    let _ = umbra::policy::suggest_render::render(&p, &s, &o.stats);
    let r = umbra::policy::replay::replay(&p, &o, now());
    let _ = umbra::policy::replay::render(&r, &o);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        check(&bytes);
    }

    /// The fuzz target's invariants (cells add up to the flows counted,
    /// suggested lines parse) on mutations of the worked example's log.
    #[test]
    fn the_fuzz_target_holds_on_mutated_example_logs(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        lines in proptest::collection::vec(any::<prop::sample::Index>(), 1..40),
    ) {
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy-examples/learn-flows.jsonl")).unwrap();
        let all: Vec<&str> = example.lines().collect();
        let mut bytes: Vec<u8> = lines.iter().flat_map(|i| format!("{}\n", all[i.index(all.len())]).into_bytes()).collect();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        umbra::fuzzing::flowlog(&bytes);
    }

    #[test]
    fn mutated_records_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = sample().into_bytes();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(bytes.len() / 2));
        check(&bytes);
    }
}

#[test]
fn the_unmutated_sample_reads_cleanly() {
    let o = {
        let mut o = Observed::new();
        o.read(sample().as_bytes(), "fuzz.log").unwrap();
        o
    };
    assert_eq!((o.stats.malformed, o.stats.flows), (0, 4));
}
