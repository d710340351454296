//! Where command output goes: stdout, or a pager when stdout is a terminal.

use std::io::{self, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Pager program for telemctl only (wins over `PAGER`).
pub const PAGER_ENV: &str = "TELEMCTL_PAGER";

pub fn stdout_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDOUT_FILENO) == 1 }
}

/// Colours are used only on a terminal, and not with `NO_COLOR` or `TERM=dumb`.
pub fn use_colour() -> bool {
    stdout_is_tty()
        && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

pub struct Output {
    pager: Option<(Child, ChildStdin)>,
    stdout: io::Stdout,
}

impl Output {
    /// Page through `TELEMCTL_PAGER`, `PAGER` or `less` when stdout is a terminal and
    /// `no_pager` is not set. The pager command is split on whitespace and executed directly
    /// (no shell); an empty value or `cat` means no pager.
    pub fn open(no_pager: bool) -> Output {
        let stdout = io::stdout();
        if no_pager || !stdout_is_tty() {
            return Output {
                pager: None,
                stdout,
            };
        }
        let spec = std::env::var(PAGER_ENV)
            .or_else(|_| std::env::var("PAGER"))
            .unwrap_or_else(|_| "less".to_string());
        let mut words = spec.split_whitespace();
        let pager = match words.next() {
            Some(prog) if prog != "cat" => {
                let mut cmd = Command::new(prog);
                cmd.args(words).stdin(Stdio::piped());
                if std::env::var_os("LESS").is_none() {
                    // Quit when it fits on one screen, keep colours, don't clear the screen.
                    cmd.env("LESS", "FRXK");
                }
                cmd.spawn().ok().and_then(|mut child| {
                    let stdin = child.stdin.take()?;
                    Some((child, stdin))
                })
            }
            _ => None,
        };
        Output { pager, stdout }
    }

    /// Flush, close the pager's input and wait for the reader to quit.
    pub fn finish(mut self) -> io::Result<()> {
        let flushed = self.flush();
        if let Some((mut child, stdin)) = self.pager.take() {
            drop(stdin);
            let _ = child.wait();
        }
        flushed
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.pager {
            Some((_, stdin)) => stdin.write(buf),
            None => self.stdout.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.pager {
            Some((_, stdin)) => stdin.flush(),
            None => self.stdout.flush(),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.pager.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
