//! postgres for tests (being written).
