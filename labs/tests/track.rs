//! The build track's checkpoints, as `tunlab track` checks them: each
//! stub compiles in its copy of the step crate and stops at its `todo!()`s
//! (so the stub still fits the crate it came from), and the reference
//! module passes the same copy's tests (so the copy is a faithful one: the
//! manifests, the lock file, the linked captures). No privileges; it
//! builds each step crate's tests once more, in `target/track/`.

use tunlab::track::{self, CHECKPOINTS};

#[test]
fn stubs_start_unsolved_and_the_reference_passes_in_the_copy() {
    for c in CHECKPOINTS {
        let dir = track::work_dir(c);
        let stub = track::module_text(c, &c.stub()).unwrap();
        let manifest = track::prepare(c, &stub, &dir).unwrap();
        let tested = track::test(c, &manifest, &dir, "stub.rs").unwrap();
        let log = std::fs::read_to_string(&tested.log).unwrap_or_default();
        assert!(
            tested.run.compile_error.is_none(),
            "step {}: the stub {} does not compile in the copy:\n{log}",
            c.step,
            c.stub().display()
        );
        assert!(!tested.passed, "step {}: the stub already passes", c.step);
        assert!(
            tested
                .run
                .failed
                .iter()
                .any(|f| f.message.contains("not yet implemented")),
            "step {}: the stub should stop at its todo!():\n{log}",
            c.step
        );

        let reference = track::module_text(c, &c.reference()).unwrap();
        let manifest = track::prepare(c, &reference, &dir).unwrap();
        let tested = track::test(c, &manifest, &dir, "reference.rs").unwrap();
        let log = std::fs::read_to_string(&tested.log).unwrap_or_default();
        assert!(
            tested.passed && tested.run.failed.is_empty(),
            "step {}: the reference fails in the copy:\n{log}",
            c.step
        );
        assert!(
            tested.run.total() >= 10,
            "step {}: only {} tests ran",
            c.step,
            tested.run.total()
        );
    }
}
