//! The `file` source's and sink's conformance fixtures (written by the conformance suite's
//! author; `None` until then, which the guard test reports).

use crate::api::fixture::{SinkFixture, SourceFixture};

/// The `file` source's fixture.
pub(crate) fn source() -> Option<Box<dyn SourceFixture>> {
    None
}

/// The `file` sink's fixture.
pub(crate) fn sink() -> Option<Box<dyn SinkFixture>> {
    None
}
