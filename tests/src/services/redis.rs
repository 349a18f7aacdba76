//! redis for tests (being written).
