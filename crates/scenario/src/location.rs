//! Where in a scenario file something is: a byte offset (a TOML span's start) turned into
//! `line:column`, the table it belongs to (`[vm]`, `[[step]] #3`) and the key written on its
//! line, so every error message can name the key and the line.

/// A place in the file, 1-based, with its surroundings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// `[vm]`, `[[step]] #3`, or `None` at the top level.
    pub(crate) table: Option<String>,
    /// The key assigned on that line (`key = …`), if any.
    pub(crate) key: Option<String>,
}

impl Location {
    /// Locates byte `offset` of `source` (clamped to the end).
    pub(crate) fn of(source: &str, offset: usize) -> Location {
        let offset = floor_char_boundary(source, offset.min(source.len()));
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            table: table_at(&source[..line_end]),
            key: key_of(&source[line_start..line_end]),
        }
    }

    /// `[[step]] #3, \`pat_index\``, or whichever part is known.
    pub(crate) fn context(&self) -> Option<String> {
        match (&self.table, &self.key) {
            (Some(t), Some(k)) => Some(format!("{t}, `{k}`")),
            (Some(t), None) => Some(t.clone()),
            (None, Some(k)) => Some(format!("`{k}`")),
            (None, None) => None,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The last table header in `text` (the file up to and including the line in question), with
/// the ordinal of array-of-tables headers. Lines inside multi-line strings are skipped.
fn table_at(text: &str) -> Option<String> {
    let mut in_string = false;
    let mut current = None;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for line in text.lines() {
        // An odd number of triple quotes opens or closes a multi-line string.
        let quotes = line.matches("\"\"\"").count() + line.matches("'''").count();
        let was_in_string = in_string;
        in_string ^= quotes % 2 == 1;
        if was_in_string {
            continue;
        }
        let Some(header) = header(line) else {
            continue;
        };
        current = Some(match header {
            Header::Table(name) => format!("[{name}]"),
            Header::Array(name) => {
                let n = match counts.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        counts.push((name.clone(), 1));
                        1
                    }
                };
                format!("[[{name}]] #{n}")
            }
        });
    }
    current
}

enum Header {
    Table(String),
    Array(String),
}

/// `[name]` or `[[name]]`, optionally followed by a comment.
fn header(line: &str) -> Option<Header> {
    let code = line.split('#').next().unwrap_or("").trim();
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    };
    if let Some(name) = code.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        return valid(name.trim()).then(|| Header::Array(name.trim().to_string()));
    }
    let name = code.strip_prefix('[')?.strip_suffix(']')?.trim();
    valid(name).then(|| Header::Table(name.to_string()))
}

/// The bare key of a `key = value` line.
fn key_of(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    bare.then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "name = \"x\"\ndescription = \"\"\"\n[[step]]\n\"\"\"\n[vm]\nkernel = \"6.16\"\n\n[[step]] # first\ndo = \"guest.sfence\"\n[[region]]\nname = \"bar\"\n[[step]]\ndo = \"guest.load\"\n";

    #[test]
    fn lines_columns_tables_and_keys() {
        let at = |needle: &str| Location::of(FILE, FILE.find(needle).unwrap());
        let l = at("\"6.16\"");
        assert_eq!((l.line, l.column), (6, 10));
        assert_eq!(l.context().as_deref(), Some("[vm], `kernel`"));
        let l = at("\"guest.sfence\"");
        assert_eq!(l.context().as_deref(), Some("[[step]] #1, `do`"));
        let l = at("\"guest.load\"");
        assert_eq!(l.context().as_deref(), Some("[[step]] #2, `do`"));
        assert_eq!(l.line, 13);
        let l = at("name = \"x\"");
        assert_eq!(l.context().as_deref(), Some("`name`"));
        assert_eq!(at("[[region]]").context().as_deref(), Some("[[region]] #1"));
    }

    #[test]
    fn offsets_past_the_end_are_clamped() {
        let l = Location::of("a = 1\n", 99);
        assert_eq!((l.line, l.column), (2, 1));
        let l = Location::of("é = 1", 1);
        assert_eq!((l.line, l.column), (1, 1));
    }
}
