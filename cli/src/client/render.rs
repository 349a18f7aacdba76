//! What the client commands show a person: the status summary, the report
//! table, progress-bar styles, and text from the server made safe for a
//! terminal. Pure functions of their inputs, apart from the stdout writer.

use std::io::{self, Write};

use anyhow::Context;
use indicatif::{HumanBytes, ProgressStyle};
use picsift_core::model::{BatchView, ReportEntry};
use picsift_core::verdict::{Reason, VerdictKind};

/// Column limits in characters; the last column is the widest because a
/// rejection's detail is what the user reads to fix the entry.
const ENTRY_WIDTH: usize = 60;
const REASON_WIDTH: usize = 28;
const DETAIL_WIDTH: usize = 80;

/// The header row of the report table.
pub(super) fn report_header() -> [String; 5] {
    ["INDEX", "ENTRY", "VERDICT", "REASON", "DETAIL/IMAGE"].map(String::from)
}

/// The human summary of a status document.
pub(super) fn describe(s: &BatchView) -> String {
    let c = &s.counts;
    let mut out = format!("batch {}: {}\n", clean(&s.id), s.phase.as_str());
    out += &format!(
        "  accepted {}  duplicate {}  rejected {}  failed {}  pending {}\n",
        c.accepted, c.duplicate, c.rejected, c.failed, c.pending
    );
    out += &format!(
        "  {} entries in {} uploaded\n",
        s.total_entries,
        HumanBytes(s.upload_bytes)
    );
    if let Some(error) = &s.error {
        out += &format!("  error: {}\n", clean(error));
    }
    if let Some(n) = &s.notification {
        let mut line = format!(
            "  notification to {}: {} after {} attempt(s)",
            clean(&n.url),
            n.state.as_str(),
            n.attempts
        );
        if let Some(at) = &n.delivered_at {
            line += &format!(" at {}", clean(at));
        }
        if let Some(error) = &n.last_error {
            line += &format!("; last error: {}", clean(error));
        }
        out += &line;
        out.push('\n');
    }
    out
}

/// The cells of one report line.
pub(super) fn row_cells(e: &ReportEntry) -> [String; 5] {
    let detail = match (e.verdict_kind(), &e.image_id, &e.duplicate_of) {
        (Some(VerdictKind::Accepted), Some(image), _) => image.clone(),
        (Some(VerdictKind::Duplicate), _, Some(original)) => match (e.duplicate_kind, e.distance) {
            (Some(kind), Some(d)) => format!("{} dup ({d} bits) of {original}", kind.as_str()),
            (Some(kind), None) => format!("{} dup of {original}", kind.as_str()),
            _ => format!("dup of {original}"),
        },
        _ => e.detail.clone().unwrap_or_else(|| "-".into()),
    };
    [
        e.index.to_string(),
        // The end of a path names the file; its start is the shared folder.
        truncate_start(&clean(&e.entry), ENTRY_WIDTH),
        clean(&e.verdict),
        truncate_end(e.reason.map_or("-", Reason::code), REASON_WIDTH),
        truncate_end(&clean(&detail), DETAIL_WIDTH),
    ]
}

/// Left-aligned columns two spaces apart, the first row being the header.
/// Widths count characters, which is right for the ids and codes and close
/// enough for entry names.
pub(super) fn render_table(rows: &[[String; 5]]) -> String {
    let mut widths = [0; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                line += &format!("{cell:<width$}  ", width = widths[i]);
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// Entry names come from the uploaded archive: control characters could
/// rewrite the user's terminal, so they are shown as `?`.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

pub(super) fn truncate_end(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn truncate_start(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_owned();
    }
    let mut out = String::from('…');
    out.extend(s.chars().skip(count - max.saturating_sub(1)));
    out
}

/// Writes to stdout without the panic `println!` has when the reader went away.
pub(super) fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// A progress-bar style from `template`, or `fallback` if it does not parse.
pub(super) fn style(template: &str, fallback: fn() -> ProgressStyle) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| fallback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use picsift_core::verdict::DuplicateKind;

    #[test]
    fn report_rows_show_image_duplicate_or_detail() {
        let entry = |verdict: &str,
                     image: Option<&str>,
                     dup: Option<&str>,
                     detail: Option<&str>| ReportEntry {
            index: 3,
            entry: "photos/a\nb.jpg".into(),
            verdict: verdict.into(),
            reason: detail.map(|_| Reason::Truncated),
            detail: detail.map(String::from),
            image_id: image.map(String::from),
            duplicate_of: dup.map(String::from),
            duplicate_kind: dup.map(|_| DuplicateKind::Exact),
            distance: None,
            checks: None,
        };
        assert_eq!(
            row_cells(&entry("accepted", Some("img1"), None, None))[4],
            "img1"
        );
        assert_eq!(
            row_cells(&entry("duplicate", None, Some("img1"), None))[4],
            "exact dup of img1"
        );
        let mut near = entry("duplicate", None, Some("img2"), None);
        near.duplicate_kind = Some(DuplicateKind::Near);
        near.distance = Some(12);
        assert_eq!(row_cells(&near)[4], "near dup (12 bits) of img2");
        let rejected = row_cells(&entry("rejected", None, None, Some("file ends early")));
        assert_eq!(
            rejected,
            [
                "3",
                "photos/a?b.jpg",
                "rejected",
                "truncated",
                "file ends early"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn status_summary_shows_phase_counts_size_error_and_notification() {
        let view: BatchView = serde_json::from_str(
            r#"{"id":"b\u001b1","owner":"acme","phase":"failed",
            "counts":{"accepted":1,"duplicate":2,"rejected":3,"failed":4,"pending":0},
            "total_entries":10,"upload_bytes":2048,"error":"not a zip archive",
            "created_at":"2026-12-01T10:00:00.000Z","updated_at":"2026-12-01T10:00:01.000Z",
            "started_at":null,"completed_at":"2026-12-01T10:00:02.000Z",
            "notification":{"url":"https://hooks.example/x","state":"delivered","attempts":2,
                "last_error":"timed out","delivered_at":"2026-12-01T10:00:03.000Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            describe(&view),
            "batch b?1: failed\n\
             \x20 accepted 1  duplicate 2  rejected 3  failed 4  pending 0\n\
             \x20 10 entries in 2.00 KiB uploaded\n\
             \x20 error: not a zip archive\n\
             \x20 notification to https://hooks.example/x: delivered after 2 attempt(s) at 2026-12-01T10:00:03.000Z; last error: timed out\n"
        );
    }

    #[test]
    fn table_columns_align_and_long_cells_are_cut() {
        let rows = [
            report_header(),
            ["10", "a.jpg", "accepted", "-", "img"].map(String::from),
        ];
        assert_eq!(
            render_table(&rows),
            "INDEX  ENTRY  VERDICT   REASON  DETAIL/IMAGE\n10     a.jpg  accepted  -       img\n"
        );
        assert_eq!(truncate_start("folder/sub/name.jpg", 9), "…name.jpg");
        assert_eq!(truncate_end("a long detail", 6), "a lon…");
        assert_eq!(truncate_end("short", 6), "short");
    }
}
