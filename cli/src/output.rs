//! Output formats shared by the subcommands: an aligned text table (like
//! `tokenwarden-sidecar report`), CSV (RFC 4180: fields with a comma, quote,
//! CR or LF are quoted and quotes doubled; CRLF line ends), and JSON (each
//! subcommand serializes its own rows; money as exact decimal strings).

use std::fmt::Write as _;

use tokenwarden_core::money::Usd;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Table,
    /// JSON for programs (money as exact decimal strings, never floats).
    Json,
    /// CSV (RFC 4180) for spreadsheets.
    Csv,
}

/// A table: a header row and rows of cells. Columns whose header is in
/// `right` are right-aligned in text (numbers).
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Column names.
    pub headers: Vec<String>,
    /// Rows; each as long as `headers`.
    pub rows: Vec<Vec<String>>,
    /// Right-aligned columns (by index).
    pub right: Vec<usize>,
}

impl Table {
    /// A table with these column names.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_string()).collect(),
            ..Self::default()
        }
    }

    /// Right-align these columns in text.
    #[must_use]
    pub fn right_aligned(mut self, cols: &[usize]) -> Self {
        self.right = cols.to_vec();
        self
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.headers.len());
        self.rows.push(row);
    }

    /// Aligned text, columns separated by two spaces, no trailing spaces.
    pub fn to_text(&self) -> String {
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = width.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut s = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let w = width.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right.contains(&i) {
                    let _ = write!(line, "{c:>w$}");
                } else {
                    let _ = write!(line, "{c:<w$}");
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    /// CSV per RFC 4180 (header row first, CRLF line ends).
    pub fn to_csv(&self) -> String {
        let mut s = String::new();
        for r in std::iter::once(&self.headers).chain(&self.rows) {
            let fields: Vec<String> = r.iter().map(|c| csv_field(c)).collect();
            s.push_str(&fields.join(","));
            s.push_str("\r\n");
        }
        s
    }
}

/// An exact amount for people: `$` and the exact decimal, at least to the
/// cent, never rounded (`$0.00041125`, `-$1.50`), as
/// `tokenwarden-sidecar report` prints it.
pub fn money(u: Usd) -> String {
    let exact = u.to_string();
    let (sign, digits) = match exact.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", exact.as_str()),
    };
    let pad = match digits.find('.') {
        None => ".00",
        Some(dot) if digits.len() - dot == 2 => "0",
        Some(_) => "",
    };
    format!("{sign}${digits}{pad}")
}

/// `part / whole` as a percentage with one decimal, rounded half up
/// (`78.0%`); `-` when `whole` is not positive.
pub fn percent(part: Usd, whole: Usd) -> String {
    let (p, w) = (part.picos(), whole.picos());
    if w <= 0 {
        return "-".into();
    }
    let tenths = (p.saturating_mul(2000) + w).div_euclid(2 * w);
    format!("{}.{}%", tenths.div_euclid(10), tenths.rem_euclid(10))
}

/// A whole number with `,` thousands separators (`3,572`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Pretty JSON of `value` with a final newline.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// One CSV field: quoted when it holds a comma, a quote, CR or LF (quotes
/// doubled), else as is.
pub fn csv_field(c: &str) -> String {
    if c.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_quotes_and_newlines() {
        let mut t = Table::new(&["workload", "cost"]);
        t.push(vec!["a,b".into(), "1.5".into()]);
        t.push(vec!["say \"hi\"".into(), "2".into()]);
        t.push(vec!["two\nlines".into(), "3".into()]);
        assert_eq!(
            t.to_csv(),
            "workload,cost\r\n\"a,b\",1.5\r\n\"say \"\"hi\"\"\",2\r\n\"two\nlines\",3\r\n"
        );
    }

    #[test]
    fn money_percent_and_counts_are_exact() {
        let m = |s: &str| money(Usd::parse_signed(s).unwrap());
        assert_eq!(m("0"), "$0.00");
        assert_eq!(m("8.5"), "$8.50");
        assert_eq!(m("0.00041125"), "$0.00041125");
        assert_eq!(m("-1.5"), "-$1.50");
        let u = |s: &str| s.parse::<Usd>().unwrap();
        assert_eq!(percent(u("614.64"), u("788")), "78.0%");
        assert_eq!(percent(u("1"), u("3")), "33.3%");
        assert_eq!(percent(u("2"), u("3")), "66.7%");
        assert_eq!(percent(u("1"), Usd::ZERO), "-");
        assert_eq!(count(3_572), "3,572");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn text_aligns_and_right_aligns_numbers() {
        let mut t = Table::new(&["MODEL", "COST"]).right_aligned(&[1]);
        t.push(vec!["claude-haiku-4-5".into(), "0.5".into()]);
        t.push(vec!["x".into(), "12.25".into()]);
        assert_eq!(
            t.to_text(),
            "MODEL              COST\nclaude-haiku-4-5    0.5\nx                 12.25\n"
        );
    }

    #[test]
    fn money_is_exact_and_at_least_to_the_cent() {
        assert_eq!(money(Usd::from_dollars(8)), "$8.00");
        assert_eq!(money(Usd::from_picos(8_500_000_000_000)), "$8.50");
        assert_eq!(money(Usd::from_picos(411_250_000)), "$0.00041125");
        assert_eq!(money(Usd::from_dollars(-1)), "-$1.00");
    }
}
