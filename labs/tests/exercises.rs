//! Every lab exercise starts unsolved, and its reference solution passes.
//! Needs only `rustc`; no privileges.

use tunlab::exercise;
use tunlab::labs::LABS;

#[test]
fn stubs_start_unsolved_and_solutions_pass() {
    let mut checked = 0;
    for lab in LABS.iter().filter(|l| l.exercise.is_some()) {
        let stub = exercise::stub(lab).unwrap();
        let outcome = exercise::check(lab, &stub).unwrap();
        assert!(
            !outcome.passed,
            "lab {}: the stub {} already passes",
            lab.number,
            stub.display()
        );
        assert!(
            outcome.output.contains("not yet implemented"),
            "lab {}: the stub should compile and stop at its todo!(), but:\n{}",
            lab.number,
            outcome.output
        );
        let solution = exercise::solution(lab).unwrap();
        let outcome = exercise::check(lab, &solution).unwrap();
        assert!(
            outcome.passed,
            "lab {}: the solution fails:\n{}",
            lab.number, outcome.output
        );
        assert!(
            exercise::hints(lab).is_some(),
            "lab {} has no HINTS.md",
            lab.number
        );
        checked += 1;
    }
    assert!(checked >= 1);
}

/// An attempt that does not compile fails with the compiler's words.
#[test]
fn an_attempt_that_does_not_compile_fails_with_the_compiler_error() {
    let lab = LABS.iter().find(|l| l.exercise.is_some()).unwrap();
    let dir = std::env::temp_dir().join(format!("tunlab-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let attempt = dir.join("checksum.rs");
    std::fs::write(
        &attempt,
        "pub fn internet_checksum(data: &[u8]) -> u16 { data.len() }\n",
    )
    .unwrap();
    let outcome = exercise::check(lab, &attempt).unwrap();
    assert!(!outcome.passed);
    assert!(outcome.output.contains("mismatched types"), "{}", outcome.output);
    std::fs::remove_dir_all(dir).unwrap();
}
