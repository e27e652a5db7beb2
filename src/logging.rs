//! Log lines start with `spank-carbon:`. Inside Slurm they go through Slurm's own log
//! functions (see `plugin`); the binary writes them to standard error or to a file in
//! the state directory.

use std::io::Write;
use std::sync::Mutex;

pub const PREFIX: &str = "spank-carbon: ";

/// A logger that appends timestamped lines to a writer.
pub struct WriterLogger {
    out: Mutex<Box<dyn Write + Send>>,
    level: log::LevelFilter,
}

impl log::Log for WriterLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = crate::units::unix_now();
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(
                out,
                "{now:.3} [{}] {PREFIX}{} {}",
                std::process::id(),
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            );
            let _ = out.flush();
        }
    }
    fn flush(&self) {}
}

/// Installs a logger writing to `out` (first call wins).
pub fn init_writer(out: Box<dyn Write + Send>, level: log::LevelFilter) {
    if log::set_boxed_logger(Box::new(WriterLogger {
        out: Mutex::new(out),
        level,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

/// Renders an error with its whole `source()` chain.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
