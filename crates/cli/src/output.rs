//! Output conventions: `--json` prints exactly one JSON object as the last line of standard output.

use anyhow::Result;
use serde::Serialize;

/// Prints `value` as one compact JSON line.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}
