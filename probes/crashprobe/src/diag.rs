//! crashprobe's own messages: one line on stderr, prefixed with the program's name. A leaf,
//! so every stage can report without importing the stage that runs it.

use std::io::Write;

/// Print `crashprobe: <msg>` on stderr; a closed or full stderr is not an error.
pub(crate) fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "crashprobe: {msg}");
}
