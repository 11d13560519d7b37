//! Located diagnostics for files the harness reads: `file:line:column: key: message`, in the
//! style of a compiler, so a task author can jump straight to the offending key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (a missing file, say).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, e.g. `inputs[1].shape[0]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)
        }
    }
}

/// A collection of diagnostics for one file, built while validating it.
#[derive(Debug)]
pub struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Reporter {
            file,
            text,
            diagnostics: Vec::new(),
        }
    }

    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = match span {
            Some(s) => line_col(self.text, s.start),
            None => (0, 0),
        };
        self.diagnostics.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Why a file the harness reads could not be loaded: it could not be read, or it was read and
/// has problems (all of them, each located).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl LoadError {
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            LoadError::Read { path, source } => vec![Diagnostic {
                file: path.clone(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read: {source}"),
            }],
            LoadError::Invalid { diagnostics } => diagnostics.clone(),
        }
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a file, mapping the I/O error to a [`LoadError`] that names it.
pub fn read_file(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses TOML keeping spans; a syntax error becomes a located diagnostic.
pub fn parse_toml(path: &Path, text: &str) -> Result<toml_edit::ImDocument<String>, LoadError> {
    toml_edit::ImDocument::parse(text.to_string()).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        let message = e.message().trim().to_string();
        let key = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().to_string())
            .unwrap_or_default();
        LoadError::Invalid {
            diagnostics: vec![Diagnostic {
                file: path.to_path_buf(),
                line,
                column,
                key,
                message: format!("TOML syntax error: {message}"),
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbb = 2\n  c = é3";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, t.len()), (3, 9));
        assert_eq!(line_col(t, 10_000), (3, 9));
    }

    #[test]
    fn display_is_compiler_style() {
        let d = Diagnostic {
            file: "tasks/x/task.toml".into(),
            line: 3,
            column: 5,
            key: "inputs[0].dtype".into(),
            message: "unknown dtype".into(),
        };
        assert_eq!(
            d.to_string(),
            "tasks/x/task.toml:3:5: `inputs[0].dtype`: unknown dtype"
        );
    }
}
