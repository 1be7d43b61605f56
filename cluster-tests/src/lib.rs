//! Scenario tests that drive Ferry from the outside: real `ferry` processes, the real Pulsar
//! broker started by `deploy/pulsar/standalone.sh`, and (as connectors land) real external
//! systems.
//!
//! Scenarios are the files in `tests/`, numbered by theme as ../shared/STYLE.md §11 describes
//! (`t00_` environment, `t10_` basics, `t20_` failover, ...). Each reads like a script: its doc
//! comment lists the steps, and every wait has a deadline and a reason
//! ([`ferry_test_support::wait::until`]).
