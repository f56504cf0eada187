//! A command line to run: a program and its arguments, written as one string split into words
//! as a shell would (quotes, backslashes) without running a shell, or as an array of words.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a command is written in `conveyor.toml`: `"php worker.php"` or `["php", "worker.php"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    /// Split into words as a shell would, without running one (no globs, pipes or variables).
    Line(String),
    /// One word per element, taken as written.
    Words(Vec<String>),
}

/// A command ready to run: the program (found at start-up) and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program as resolved (an absolute path when found on `PATH`).
    pub program: PathBuf,
    /// The arguments after the program.
    pub args: Vec<String>,
    /// The command as written, for messages.
    pub display: String,
}

impl CommandSpec {
    /// Splits the command and checks that its program exists, relative paths being taken from
    /// `dir` (the configuration file's folder, or the current one).
    pub fn resolve(&self, dir: &Path) -> Result<CommandLine> {
        let (words, display) = match self {
            CommandSpec::Line(line) => {
                let words = shell_words::split(line).map_err(|e| Error::BadCommand {
                    command: line.clone(),
                    message: e.to_string(),
                })?;
                (words, line.clone())
            }
            CommandSpec::Words(words) => (words.clone(), shell_words::join(words)),
        };
        let Some((program, args)) = words.split_first() else {
            return Err(Error::BadCommand {
                command: display,
                message: "the command is empty".into(),
            });
        };
        let program = find_program(program, dir).ok_or_else(|| Error::MissingProgram {
            command: display.clone(),
            program: program.clone(),
            hint: if program.contains('/') {
                format!(" (relative to {})", dir.display())
            } else {
                " on PATH".into()
            },
        })?;
        Ok(CommandLine {
            program,
            args: args.to_vec(),
            display,
        })
    }
}

/// A program name with a slash is a path (relative to `dir`); without one it is looked up on
/// `PATH`, as a shell does.
fn find_program(program: &str, dir: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let path = dir.join(program);
        return is_executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_a_shell_without_one() {
        let line = CommandSpec::Line("sh -c 'echo \"$HOME\" | cat' x".into());
        let cmd = line.resolve(Path::new("/")).expect("sh exists");
        assert!(cmd.program.ends_with("sh"), "{cmd:?}");
        assert_eq!(cmd.args, ["-c", "echo \"$HOME\" | cat", "x"]);
        let words = CommandSpec::Words(vec!["sh".into(), "a b".into()]);
        assert_eq!(words.resolve(Path::new("/")).expect("sh").args, ["a b"]);
    }

    #[test]
    fn bad_and_missing_commands_are_clear_errors() {
        let err = CommandSpec::Line("php 'unclosed".into())
            .resolve(Path::new("/"))
            .expect_err("unclosed quote");
        assert!(err.to_string().contains("php 'unclosed"), "{err}");
        let err = CommandSpec::Line("  ".into())
            .resolve(Path::new("/"))
            .expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = CommandSpec::Line("no-such-program-conveyor x".into())
            .resolve(Path::new("/"))
            .expect_err("missing");
        assert!(err.to_string().contains("not found on PATH"), "{err}");
        let err = CommandSpec::Words(vec!["./nope.sh".into()])
            .resolve(Path::new("/tmp"))
            .expect_err("missing file");
        assert!(err.to_string().contains("relative to /tmp"), "{err}");
    }
}
