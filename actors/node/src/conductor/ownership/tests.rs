//! Unit tests of the ownership table.
