//! The README's configuration table says what the code does: exactly the variables of
//! `wf_core::config::VARIABLES`, each with the default the code uses.

use std::collections::BTreeMap;

use wf_core::config::VARIABLES;

/// `(name, default cell)` of every row of the README's "Configuration" table.
fn readme_rows() -> Vec<(String, String)> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README has a `## Configuration` section");
    section
        .lines()
        .filter(|l| l.starts_with("| `WF_"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 3, "a row with fewer than 3 cells: {row}");
            let name = cells[0].trim_matches('`');
            assert!(
                !name.contains('`'),
                "one variable per row, in backticks: {row}"
            );
            (name.to_owned(), cells[1].to_owned())
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_variables_and_their_defaults() {
    let rows = readme_rows();
    let readme: BTreeMap<String, String> = rows.iter().cloned().collect();
    assert_eq!(
        readme.len(),
        rows.len(),
        "a variable listed twice: {rows:?}"
    );
    let code: BTreeMap<String, String> = VARIABLES
        .iter()
        .map(|v| (v.name.to_owned(), v.default_markdown()))
        .collect();
    let missing: Vec<&String> = code.keys().filter(|k| !readme.contains_key(*k)).collect();
    let unknown: Vec<&String> = readme.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README configuration table: missing {missing:?}, not in the code {unknown:?}"
    );
    for (name, default) in &code {
        assert_eq!(
            &readme[name], default,
            "README default of {name} (left) differs from config::VARIABLES (right)"
        );
    }
}
