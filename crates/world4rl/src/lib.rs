//! World4RL in Rust.
