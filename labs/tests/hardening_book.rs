//! The hardening chapter reports long runs, and its tables are made by the
//! runs themselves: `book/src/hardening/fuzz.md` and `soak.md` must be
//! exactly what `tunlab fuzz` and `tunlab soak` make from the JSON they
//! wrote beside them, every fuzz target's last run must have lasted at
//! least ten minutes without a crash, and the soak thirty minutes. Needs
//! no root.

use tunlab::env::workspace_root;
use tunlab::{fuzz, soak};

fn read_json(name: &str) -> (serde_json::Value, String) {
    let dir = workspace_root().join("book/src/hardening");
    let json = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap_or_else(|e| {
        panic!("book/src/hardening/{name}.json: {e}; the {name} run with --book writes it")
    });
    let md = std::fs::read_to_string(dir.join(format!("{name}.md"))).unwrap();
    (serde_json::from_str(&json).unwrap(), md)
}

#[test]
fn the_fuzz_table_is_the_long_runs_own() {
    let (json, md) = read_json("fuzz");
    assert_eq!(
        fuzz::markdown(&json).unwrap(),
        md,
        "fuzz.md is not made from fuzz.json"
    );
    let targets = json["targets"].as_array().unwrap();
    for target in fuzz::TARGETS {
        let run = targets
            .iter()
            .find(|t| t["name"] == target.name)
            .unwrap_or_else(|| panic!("fuzz.json has no run of {}", target.name));
        assert!(
            run["seconds"].as_u64() >= Some(600),
            "{} ran {} s, not ten minutes",
            target.name,
            run["seconds"]
        );
        assert!(run["runs"].as_u64() > Some(0), "{} ran nothing", target.name);
        assert!(
            run["crash"].is_null(),
            "{}'s last run crashed ({}): fix it and run it again",
            target.name,
            run["crash"]
        );
    }
}

#[test]
fn the_soak_table_is_the_thirty_minute_runs_own() {
    let (json, md) = read_json("soak");
    assert_eq!(
        soak::markdown(&json).unwrap(),
        md,
        "soak.md is not made from soak.json"
    );
    assert!(
        json["config"]["duration_s"].as_u64() >= Some(1800),
        "not a 30-minute run"
    );
    assert_eq!(json["cycles"].as_array().map(Vec::len), Some(30));
    assert!(json["samples"].as_array().is_some_and(|s| s.len() >= 300));
}
