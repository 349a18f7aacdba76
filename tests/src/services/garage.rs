//! garage for tests (being written).
