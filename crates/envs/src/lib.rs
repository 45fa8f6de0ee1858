//! world4rl environments.
