//! Markdown helpers shared by the reports.

/// A table cell: pipes escaped, line breaks flattened.
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cells_escape_pipes() {
        assert_eq!(super::cell("a|b\nc"), "a\\|b c");
    }
}
