//! Plain-text tables: a header row and left-aligned columns two spaces apart.

/// Returns `rows` under `headers` as aligned text; an empty table says so.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)".to_owned();
    }
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(column) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(&mut headers.iter().copied())];
    out.extend(
        rows.iter()
            .map(|row| line(&mut row.iter().map(String::as_str))),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_their_widest_cell() {
        let text = render(
            &["ID", "STATE"],
            &[
                vec!["0".to_owned(), "PENDING".to_owned()],
                vec!["10".to_owned(), "RUNNING".to_owned()],
            ],
        );
        assert_eq!(text, "ID  STATE\n0   PENDING\n10  RUNNING");
        assert_eq!(render(&["ID"], &[]), "(none)");
    }
}
