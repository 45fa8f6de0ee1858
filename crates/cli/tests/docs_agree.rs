//! The README quotes the replicated result; `docs/refinement.md` holds the measurements it comes from.
//! A number changed in one and not in the other fails here.

use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Markdown as compared: no bold, ASCII minus signs.
fn plain(text: &str) -> String {
    text.replace("**", "").replace('−', "-")
}

/// The cells of a table row holding an interval, e.g. `+28.9 [+25.0, +32.7]`.
fn intervals(row: &str) -> Vec<String> {
    row.split('|')
        .map(str::trim)
        .filter(|c| c.contains('[') && c.ends_with(']'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_result_table_quotes_the_replicates_in_the_docs() {
    let readme = plain(&read("README.md"));
    let docs = plain(&read("docs/refinement.md"));
    let section = readme
        .split("## The result")
        .nth(1)
        .expect("the README has a section \"The result\"")
        .split("\n## ")
        .next()
        .unwrap();
    let mut checked = 0;
    for row in section.lines().filter(|l| l.starts_with('|')) {
        for interval in intervals(row) {
            assert!(
                docs.contains(&interval),
                "the README's {interval} (row `{row}`) is not in docs/refinement.md"
            );
            checked += 1;
        }
    }
    // two intervals per replicate and task, two pooled per task
    assert!(
        checked >= 12,
        "only {checked} intervals found in the README's result table"
    );
}

#[test]
fn intervals_are_read_from_table_cells() {
    let row = "| push-block | 0 | 40.9 % | **+28.9** [+25.0, +32.7] | +4.5 [+1.2, +7.8] | 72.8 / 67.8 % |";
    assert_eq!(
        intervals(&plain(row)),
        vec!["+28.9 [+25.0, +32.7]", "+4.5 [+1.2, +7.8]"]
    );
}
