//! The start patterns: which line opens an oops, how the record is classified, and which
//! collection [`Rules`] the rest of it follows. [`PATTERNS`] are the C client's, unchanged
//! and tried first; [`EXTENSION_PATTERNS`] are the headers of newer kernels.
//!
//! Invariant: the tables are constants and matching reads only the line; the order of the
//! tables is the order of precedence.

use super::text::{find_ignore_case, starts_with_ignore_case};

/// How a start pattern is matched against a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// The line starts with the pattern text (case-sensitive).
    Prefix,
    /// The line starts with the pattern text and, after it, contains this text too
    /// (both case-sensitive).
    PrefixContaining(&'static str),
    /// The C regex `^ALSA (.*): BUG(.*)`, case-insensitive.
    AlsaBug,
    /// The C regex `irq [[:digit:]]+: nobody cared` anywhere in the line, case-insensitive.
    IrqNobodyCared,
}

/// How the lines after the first one are collected, and how the payload reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// The C client's end conditions and payload (every pattern of [`PATTERNS`]).
    C,
    /// The C end conditions, and a line that opens an oops ends this one too; the payload
    /// reads the first `Call Trace:` block (see the module documentation).
    Trace,
    /// [`Rules::Trace`], but what x86 `die()` prints after the kernel frames (user-space
    /// registers, `Modules linked in:`, `CR2:`) still belongs to the oops, up to
    /// `[ end trace`.
    Die,
    /// [`Rules::Trace`] for arm64's `die()`: a fault header (`Unable to handle kernel …`)
    /// keeps the `Internal error: …` line that follows it, so the fault and its die report
    /// are one oops; the stack dump ends at the `Code:` line printed after it.
    Arm64,
}

/// One start pattern: what opens an oops, and how the record is classified.
#[derive(Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern text: as the C client spelled it (the regex source for regex patterns),
    /// or the prefix of an extension pattern.
    pub text: &'static str,
    pub matcher: Matcher,
    pub classification: &'static str,
    pub severity: u32,
    pub rules: Rules,
}

const WARNING: &str = "org.clearlinux/kernel/warning";
const BUG: &str = "org.clearlinux/kernel/bug";

const fn prefix(text: &'static str, classification: &'static str, severity: u32) -> Pattern {
    Pattern {
        text,
        matcher: Matcher::Prefix,
        classification,
        severity,
        rules: Rules::C,
    }
}

/// An extension pattern: `text` starts the line, `containing` (if not empty) follows it.
const fn extension(
    text: &'static str,
    containing: &'static str,
    classification: &'static str,
    severity: u32,
    rules: Rules,
) -> Pattern {
    Pattern {
        text,
        matcher: if containing.is_empty() {
            Matcher::Prefix
        } else {
            Matcher::PrefixContaining(containing)
        },
        classification,
        severity,
        rules,
    }
}

/// The 22 start patterns, tried in this order; the first match wins.
pub static PATTERNS: [Pattern; 22] = [
    prefix("NETDEV WATCHDOG: ", WARNING, 2),
    prefix("sysctl table check failed: ", WARNING, 2),
    prefix("IRQ handler type mismatch for IRQ", WARNING, 2),
    Pattern {
        text: "^ALSA (.*): BUG(.*)",
        matcher: Matcher::AlsaBug,
        classification: "crash/kernel/bug",
        severity: 2,
        rules: Rules::C,
    },
    Pattern {
        text: "irq [[:digit:]]+: nobody cared",
        matcher: Matcher::IrqNobodyCared,
        classification: "crash/kernel/warning",
        severity: 2,
        rules: Rules::C,
    },
    prefix("WARNING: ", WARNING, 2),
    prefix("general protection fault: ", BUG, 4),
    prefix("BUG: unable to handle kernel ", BUG, 4),
    prefix("BUG:", BUG, 4),
    prefix("kernel BUG at", BUG, 4),
    prefix("general protection fault:", BUG, 4),
    prefix(
        "do_IRQ: stack overflow:",
        "org.clearlinux/kernel/stackoverflow",
        4,
    ),
    prefix("RTNL: assertion failed", WARNING, 2),
    prefix("Eeek! page_mapcount(page) went negative!", BUG, 4),
    prefix("near stack overflow (cur:", BUG, 4),
    prefix("double fault", BUG, 4),
    prefix("Badness", BUG, 4),
    prefix("list_del corruption.", WARNING, 2),
    prefix("list_add corruption.", WARNING, 2),
    prefix("ACPI Error:", WARNING, 2),
    prefix(
        "Kernel panic - not syncing:",
        "org.clearlinux/kernel/panic",
        4,
    ),
    prefix(
        "BERT: Error records from previous boot:",
        "org.clearlinux/bert/debug",
        2,
    ),
];

/// Headers of newer kernels that no C pattern matches, tried after [`PATTERNS`].
pub static EXTENSION_PATTERNS: [Pattern; 12] = [
    // x86 die() since 6.10: `Oops: <trap>: <code> [#n]`, e.g. `Oops: Oops: 0002 [#1] SMP`.
    extension("Oops: ", "", BUG, 4, Rules::Die),
    // 5.x to 6.9: `general protection fault, probably for non-canonical address 0x…: 0000`.
    extension("general protection fault, ", "", BUG, 4, Rules::Die),
    // 4.13+ soft lockup: `watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [comm:pid]`.
    extension("watchdog: BUG:", "", BUG, 4, Rules::Trace),
    // `watchdog: Watchdog detected hard LOCKUP on cpu 1`; 6.5+ `watchdog: CPU2: Watchdog …`.
    extension(
        "watchdog: ",
        "Watchdog detected hard LOCKUP",
        BUG,
        4,
        Rules::Trace,
    ),
    // The same two before 4.13.
    extension("NMI watchdog: BUG:", "", BUG, 4, Rules::Trace),
    extension(
        "NMI watchdog: ",
        "Watchdog detected hard LOCKUP",
        BUG,
        4,
        Rules::Trace,
    ),
    // `INFO: task kworker/u8:2:123 blocked for more than 122 seconds.`, but not the
    // `INFO: task x:1 is blocked on a mutex likely owned by task y:2.` inside that report.
    extension(
        "INFO: task ",
        " blocked for more than ",
        WARNING,
        2,
        Rules::Trace,
    ),
    // `rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:`, `… self-detected stall on
    // CPU`, `… detected expedited stalls …`: every `rcu: INFO: ` line is a stall header.
    extension("rcu: INFO: ", "", WARNING, 2, Rules::Trace),
    // The same before 4.19, without the `rcu: ` prefix.
    extension("INFO: rcu_", " stall", WARNING, 2, Rules::Trace),
    // `UBSAN: array-index-out-of-bounds in drivers/foo.c:123:45`.
    extension("UBSAN: ", "", WARNING, 2, Rules::Trace),
    // arm64 faults: `Unable to handle kernel NULL pointer dereference at virtual address …`,
    // `… paging request at …`, `… execute from non-executable memory at …`, `… access to
    // user memory outside uaccess routines at …`; `Internal error: Oops: …` follows.
    extension("Unable to handle kernel ", "", BUG, 4, Rules::Arm64),
    // arm64 die() on its own: `Internal error: Oops: 0000000096000004 [#1] PREEMPT SMP`
    // (5.x prints the ESR with 8 digits), `Internal error: Oops - BUG: …` (after `kernel BUG
    // at`, which the C pattern already holds), `… Oops - Undefined instruction: …`,
    // `Internal error: synchronous external abort: …`, `… SP/PC alignment exception: …`.
    extension("Internal error: ", "", BUG, 4, Rules::Arm64),
];

impl Pattern {
    /// Whether `line` (already stripped of its syslog prefix) opens an oops of this kind.
    pub fn matches(&self, line: &str) -> bool {
        match self.matcher {
            Matcher::Prefix => line.starts_with(self.text),
            Matcher::PrefixContaining(needle) => line
                .strip_prefix(self.text)
                .is_some_and(|rest| rest.contains(needle)),
            Matcher::AlsaBug => {
                starts_with_ignore_case(line, "ALSA ") && find_ignore_case(&line[5..], ": BUG")
            }
            Matcher::IrqNobodyCared => irq_nobody_cared(line),
        }
    }

    /// The ALSA pattern keeps collecting through `WARNING:` lines.
    pub(super) fn is_alsa(&self) -> bool {
        self.matcher == Matcher::AlsaBug
    }

    /// BERT reports are the `[Hardware Error]:` lines that follow, not a stack dump.
    pub(super) fn is_bert(&self) -> bool {
        self.text.starts_with("BERT:")
    }
}

/// The first pattern that `line` starts an oops for: the C patterns first, then the
/// extension patterns.
pub fn match_start(line: &str) -> Option<&'static Pattern> {
    PATTERNS
        .iter()
        .chain(EXTENSION_PATTERNS.iter())
        .find(|p| p.matches(line))
}

/// `irq <digits>: nobody cared`, anywhere, case-insensitive.
fn irq_nobody_cared(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len()).any(|i| {
        let Some(rest) = b
            .get(i..)
            .filter(|r| r.len() >= 4 && r[..4].eq_ignore_ascii_case(b"irq "))
        else {
            return false;
        };
        let rest = &rest[4..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        digits > 0
            && rest[digits..].len() >= 14
            && rest[digits..digits + 14].eq_ignore_ascii_case(b": nobody cared")
    })
}
