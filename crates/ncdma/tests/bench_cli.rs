//! `ncdma bench`: the input contract (the benchmarks themselves are run by hand, and their
//! figures recorded in BENCHMARKS.md; their parts have unit tests in `vmm::bench`).

mod common;

use common::assert_bad_input;

#[test]
fn a_repetition_count_outside_one_to_ten_thousand_is_refused() {
    for name in ["spte", "memslots", "coherence", "migrate", "stream"] {
        assert_bad_input(&["bench", name, "--reps", "0"], "--reps");
    }
    assert_bad_input(&["bench", "stream", "--reps", "10001"], "--reps");
    // Taken for a flag of its own, and named as such.
    assert_bad_input(&["bench", "stream", "--reps", "-3"], "-3");
}

#[test]
fn an_unknown_benchmark_is_refused_with_the_names() {
    assert_bad_input(&["bench", "wire"], "stream");
}
