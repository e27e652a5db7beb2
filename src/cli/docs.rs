//! `spank-carbon docs --out DIR` (hidden): the man pages spank-carbon(8) and
//! spank-carbon.conf(5), the example TOML configuration and the shell completions,
//! generated from the clap definitions in main.rs and the key table
//! `spank_carbon::core::config::TABLE` (defaults from `Config::default()`), so that none of
//! them can drift from the code; `--readme-keys` prints README.md's table of keys from the
//! same table. `scripts/package.sh` runs it; the tests below check that every command,
//! option and key is there, that README.md holds the table and that mandoc finds nothing
//! to say.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, Command};
use spank_carbon::core::config::{self, Key};

/// Where the plugin library is, when the generator is not told (scripts/install.sh's).
pub const DEFAULT_PLUGIN: &str = "/usr/local/lib/spank-carbon/libspank_carbon.so";
/// The TOML file the packages ship and their plugstack drop-in names with `config=`.
pub const PACKAGED_TOML: &str = "/etc/spank-carbon/spank-carbon.toml";

/// The lines around README.md's table of keys.
pub const README_KEYS_BEGIN: &str = "<!-- keys: generated from the key table in src/core/config.rs by `spank-carbon docs --readme-keys`; a test checks it -->";
pub const README_KEYS_END: &str = "<!-- /keys -->";

#[derive(clap::Args)]
pub struct Options {
    /// Directory to write man8/, man5/, completions/ and spank-carbon.toml into.
    #[arg(long, required_unless_present = "readme_keys")]
    pub out: Option<PathBuf>,
    /// Print README.md's table of configuration keys (markdown, between its marker lines)
    /// instead.
    #[arg(long, conflicts_with = "out")]
    pub readme_keys: bool,
    /// The plugin library's path as installed, for the pages' plugstack.conf line.
    #[arg(long, default_value = DEFAULT_PLUGIN)]
    pub plugin: String,
    /// The page's date (YYYY-MM-DD; default: from SOURCE_DATE_EPOCH, else today).
    #[arg(long)]
    pub date: Option<String>,
}

/// A key's default as people are told it (markdown): its value in `Config::default()`
/// as code, else what its table entry says.
fn default_shown(k: &Key) -> String {
    match (k.default_value(), &k.unset) {
        (Some(v), _) => format!("`{v}`"),
        (None, Some(u)) => u.shown.to_string(),
        (None, None) => "none".into(),
    }
}

/// Markdown made plain text (the key table's texts are markdown): no code or emphasis
/// marks.
fn plain(md: &str) -> String {
    md.replace(['`', '*'], "")
}

/// A key's text as a sentence: plain, with a capital first letter.
fn key_sentence(md: &str) -> String {
    let text = plain(md);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// README.md's table of keys (between its `<!-- keys: ... -->` and `<!-- /keys -->`
/// lines; a test checks that it is this).
pub fn readme_keys() -> String {
    let mut o = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in config::TABLE {
        let _ = writeln!(o, "| `{}` | {} | {} |", k.name, default_shown(k), k.doc);
    }
    o
}

/// Where a key can be set.
fn sources(key: &str) -> &'static str {
    if key == "config" {
        "plugstack.conf only"
    } else {
        "plugstack.conf or the TOML file"
    }
}

/// Text for roff: backslashes escaped, hyphens as \- (so that options stay
/// copy-and-pasteable), whitespace runs (doc comments' line breaks) made one space.
fn esc(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.replace('\\', "\\e").replace('-', "\\-")
}

/// A line of running text: a leading `.` or `'` would be read as a request.
fn line(out: &mut String, text: &str) {
    let t = esc(text);
    if t.starts_with('.') || t.starts_with('\'') {
        out.push_str("\\&");
    }
    out.push_str(&t);
    out.push('\n');
}

fn header(out: &mut String, name: &str, section: u8, date: &str, title: &str) {
    let _ = writeln!(
        out,
        ".TH {} {section} {date} \"spank\\-carbon {}\" \"{title}\"",
        esc(&name.to_ascii_uppercase()),
        env!("CARGO_PKG_VERSION")
    );
}

/// The page's date: `SOURCE_DATE_EPOCH` (reproducible builds), else now.
pub fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| spank_carbon::units::unix_now() as i64);
    ymd(secs.div_euclid(86_400))
}

/// The civil date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn ymd(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The visible arguments of a command, without clap's own --help and --version.
fn visible_args(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version"))
}

/// An option as the list shows it (`\-j, \-\-job JOB`), or the synopsis (`short`:
/// one name, `\-\-job JOB`).
fn arg_label(a: &Arg, short: bool) -> String {
    let value = || {
        a.get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| a.get_id().as_str().to_ascii_uppercase())
    };
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    if a.is_positional() {
        let name = format!("{}...", value());
        return if a.is_last_set() {
            format!("\\-\\- {}", esc(&name))
        } else {
            esc(&name)
        };
    }
    let mut names = Vec::new();
    if let Some(s) = a.get_short().filter(|_| !short || a.get_long().is_none()) {
        names.push(format!("\\fB\\-{}\\fR", esc(&s.to_string())));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let mut label = names.join(", ");
    if takes_value {
        let _ = write!(label, " \\fI{}\\fR", esc(&value()));
    }
    label
}

/// The help text of an option, with its possible values and default.
fn arg_help(a: &Arg) -> String {
    let mut text = a
        .get_long_help()
        .or(a.get_help())
        .map(|h| sentence(&h.to_string()))
        .unwrap_or_default();
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    if takes_value && !a.is_positional() {
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !values.is_empty() {
            let _ = write!(text, " One of: {}.", values.join(", "));
        }
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            let _ = write!(text, " Default: {}.", defaults.join(","));
        }
    }
    text.trim().to_string()
}

fn about(cmd: &Command) -> String {
    cmd.get_long_about()
        .or(cmd.get_about())
        .map(|s| sentence(&s.to_string()))
        .unwrap_or_default()
}

/// clap drops a doc comment's final period; the page's text is sentences.
fn sentence(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() || t.ends_with(['.', '!', '?']) {
        t.to_string()
    } else {
        format!("{t}.")
    }
}

/// The visible subcommands of `cmd` (the commands the pages document).
pub fn visible_subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn command_section(out: &mut String, path: &str, cmd: &Command) {
    let _ = writeln!(out, ".SS {}", esc(path));
    let mut synopsis = format!("\\fB{}\\fR", esc(path));
    for a in visible_args(cmd) {
        let _ = write!(synopsis, " [{}]", arg_label(a, true));
    }
    out.push_str(&synopsis);
    out.push('\n');
    let text = about(cmd);
    if !text.is_empty() {
        out.push_str(".PP\n");
        line(out, &text);
    }
    for a in visible_args(cmd) {
        out.push_str(".TP\n");
        out.push_str(&arg_label(a, false));
        out.push('\n');
        line(out, &arg_help(a));
    }
    for sub in visible_subcommands(cmd) {
        command_section(out, &format!("{path} {}", sub.get_name()), sub);
    }
}

/// spank-carbon(8): the plugin, its plugstack.conf line and every command.
pub fn man8(cli: &Command, plugin: &str, date: &str) -> String {
    let mut cmd = cli.clone();
    cmd.build();
    let mut o = String::new();
    header(&mut o, "spank-carbon", 8, date, "System Administration");
    o.push_str(".SH NAME\nspank\\-carbon \\- GPU energy and CO2e of Slurm jobs, in their accounting record\n");
    o.push_str(".SH SYNOPSIS\n");
    let _ = writeln!(
        o,
        "\\fBoptional\\fR {} [\\fIkey\\fR=\\fIvalue\\fR ...]",
        esc(plugin)
    );
    o.push_str(".br\n");
    o.push_str("\\fBspank\\-carbon\\fR \\fIcommand\\fR [\\fIoptions\\fR]\n");
    o.push_str(".SH DESCRIPTION\n");
    line(&mut o, "spank-carbon is a Slurm SPANK plugin. In each job's prolog (slurm_spank_job_prolog, as root on every node of the job) it starts a sampler of the job's GPUs (NVML) and reads their energy counters; in the epilog it totals the node's GPU energy, converts it to CO2e (grid intensity x PUE) and queues the node's part of the job's record, which the node's courier writes into the job's accounting field with sacctmgr. Users read it with sacct or spank-carbon report.");
    o.push_str(".PP\n");
    line(&mut o, "The plugin never fails a job: with no GPU, no NVML or no accounting, jobs run as usual and nothing false is recorded; errors go to slurmd's log with the prefix spank-carbon:.");
    o.push_str(".SH ENABLING THE PLUGIN\n");
    line(&mut o, "Add one line to plugstack.conf (or a file it includes, such as plugstack.conf.d/spank-carbon.conf) on every node:");
    o.push_str(".PP\n.RS\n.nf\n");
    let _ = writeln!(o, "optional {} config={}", esc(plugin), esc(PACKAGED_TOML));
    o.push_str(".fi\n.RE\n.PP\n");
    line(&mut o, "The arguments are configuration keys (key=value), see spank-carbon.conf(5). Use optional, not required: a required plugin whose prolog or epilog fails drains the node.");
    o.push_str(".PP\n");
    line(&mut o, "Set PrologFlags=Alloc in slurm.conf: without it the prolog runs on a node only when the job's first step starts there, and a node where no step ran has no measurement. Do not set PrologFlags=RunInJob (Slurm 24.05 and later): slurmd then never runs SPANK job prologs and epilogs.");
    o.push_str(".PP\n");
    line(&mut o, "Then restart slurmd (scontrol reconfigure is not enough) and run spank-carbon check on the node. The plugin must be built for slurmd's major.minor release; Slurm does not load it otherwise.");
    o.push_str(".SH COMMANDS\n");
    line(&mut o, "Operators run check, pending, deliver, fairshare and tres as root; users run report. The plugin itself starts sample and deliver.");
    for sub in visible_subcommands(&cmd) {
        command_section(&mut o, &format!("spank-carbon {}", sub.get_name()), sub);
    }
    o.push_str(".SH FILES\n");
    let files: [(&str, String); 5] = [
        (plugin, "the SPANK plugin, loaded by slurmd, slurmstepd, srun, sbatch and salloc".into()),
        (PACKAGED_TOML, "the packaged configuration file, see spank-carbon.conf(5)".into()),
        (
            config::DEFAULT_STATE_DIR,
            "the node's state: sampler state, pending records (pending/), local records (records/YYYY-MM-DD.jsonl) and the log".into(),
        ),
        (
            "/var/lib/spank-carbon/spank-carbon.log",
            "the log of the sampler and the courier (slurmd's own log has the plugin's lines)".into(),
        ),
        ("/etc/spank-carbon/fairshare.toml", "the policy of spank-carbon fairshare".into()),
    ];
    for (path, what) in files {
        let _ = writeln!(o, ".TP\n.I {}", esc(path));
        line(&mut o, &what);
    }
    o.push_str(".SH EXIT STATUS\n");
    line(&mut o, "0 on success; 1 when a command failed (check: any item is an error); 2 for a usage or configuration error.");
    o.push_str(".SH SEE ALSO\n");
    o.push_str(".BR spank\\-carbon.conf (5),\n.BR spank (8),\n.BR slurm.conf (5),\n.BR sacct (1),\n.BR sacctmgr (1)\n");
    o
}

/// spank-carbon.conf(5): every configuration key, its default and where it is set.
pub fn man5(plugin: &str, date: &str) -> String {
    let mut o = String::new();
    header(&mut o, "spank-carbon.conf", 5, date, "File Formats");
    o.push_str(
        ".SH NAME\nspank\\-carbon.conf \\- configuration of the spank\\-carbon SPANK plugin\n",
    );
    o.push_str(".SH SYNOPSIS\n");
    let _ = writeln!(
        o,
        "\\fBoptional\\fR {} [\\fIkey\\fR=\\fIvalue\\fR ...]",
        esc(plugin)
    );
    o.push_str(".br\n");
    o.push_str(&esc(PACKAGED_TOML));
    o.push('\n');
    o.push_str(".SH DESCRIPTION\n");
    line(&mut o, "Each key is given as key=value among the plugin's arguments in plugstack.conf, or as key = value in a TOML file that plugstack.conf names with config=PATH. The file is read first and plugstack.conf arguments override it. The file must be owned by root and not writable by group or others: the plugin runs as root and acts on what it says.");
    o.push_str(".PP\n");
    line(&mut o, "An unknown key or a bad value is reported in slurmd's log, naming the key, and the plugin then does nothing (jobs run as usual) until it is fixed. The commands that take the plugin's arguments (spank-carbon deliver, pending, sample) read them after --. spank-carbon check checks them through the same parser.");
    o.push_str(".SH KEYS\n");
    for k in config::TABLE {
        let _ = writeln!(o, ".TP\n.B {}", esc(k.name));
        line(&mut o, &key_sentence(k.doc));
        o.push_str(".br\n");
        line(
            &mut o,
            &format!(
                "Default: {}. Set in: {}.",
                plain(&default_shown(k)),
                sources(k.name)
            ),
        );
    }
    o.push_str(".SH EXAMPLE\n.RS\n.nf\n");
    let _ = writeln!(
        o,
        "# plugstack.conf.d/spank\\-carbon.conf\noptional {} config={} intensity=350",
        esc(plugin),
        esc(PACKAGED_TOML)
    );
    let _ = writeln!(
        o,
        "\n# {}\npue = 1.3\nstate_dir = \"/var/lib/spank\\-carbon/%n\"",
        esc(PACKAGED_TOML)
    );
    o.push_str(".fi\n.RE\n");
    o.push_str(".SH SEE ALSO\n.BR spank\\-carbon (8),\n.BR spank (8),\n.BR slurm.conf (5)\n");
    o
}

/// The example TOML file: every key but `config`, commented out at its default (a test
/// uncomments them and gets `Config::default()`), or at an example value for a key that
/// has no default.
pub fn toml_example() -> String {
    let mut o = String::from(
        "# spank-carbon configuration: read by the plugin when plugstack.conf passes\n\
         # config=/etc/spank-carbon/spank-carbon.toml (the packaged drop-in does).\n\
         # Every key is shown at its default, commented out; see spank-carbon.conf(5).\n\
         # This file must stay owned by root and not writable by group or others.\n",
    );
    for k in config::TABLE.iter().filter(|k| k.name != "config") {
        o.push('\n');
        for l in wrap(&key_sentence(k.doc), 86) {
            let _ = writeln!(o, "# {l}");
        }
        match (k.default_value(), &k.unset) {
            (Some(v), _) => {
                let _ = writeln!(o, "#{} = {}", k.name, toml_value(&v));
            }
            (None, Some(u)) => {
                let _ = writeln!(o, "# Default: {}; for example:", plain(u.shown));
                let _ = writeln!(o, "#{} = {}", k.name, toml_value(u.example));
            }
            (None, None) => {}
        }
    }
    o
}

/// A value as TOML: numbers and booleans bare, everything else a string.
fn toml_value(v: &str) -> String {
    if v == "true" || v == "false" || v.parse::<f64>().is_ok_and(f64::is_finite) {
        v.to_string()
    } else {
        // A JSON string is a TOML basic string for what paths and words hold.
        serde_json::Value::String(v.to_string()).to_string()
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let cur = lines.last_mut().expect("one line at least");
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(word);
        }
    }
    lines
}

/// The completion script for `shell`, without hidden commands (clap_complete would
/// offer them).
pub fn completion(cli: &Command, shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Command::new("spank-carbon")
        .version(env!("CARGO_PKG_VERSION"))
        .about(cli.get_about().cloned().unwrap_or_default())
        .subcommand_required(true)
        .args(
            cli.get_arguments()
                .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
                .cloned(),
        )
        .subcommands(visible_subcommands(cli).cloned());
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "spank-carbon", &mut buf);
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 names a hyphenated program `spank__carbon` where it sets the
        // command and `spank__subcmd__carbon` where it matches it: no option of any
        // command would complete. One name for both.
        let text = String::from_utf8_lossy(&buf).replace("spank__subcmd__carbon", "spank__carbon");
        buf = text.into_bytes();
    }
    buf
}

/// Writes everything under `out`; returns the files written.
pub fn write_all(cli: &Command, out: &Path, plugin: &str, date: &str) -> io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let files: Vec<(PathBuf, Vec<u8>)> = vec![
        (
            "man8/spank-carbon.8".into(),
            man8(cli, plugin, date).into_bytes(),
        ),
        (
            "man5/spank-carbon.conf.5".into(),
            man5(plugin, date).into_bytes(),
        ),
        ("spank-carbon.toml".into(), toml_example().into_bytes()),
        (
            "completions/spank-carbon.bash".into(),
            completion(cli, Shell::Bash),
        ),
        (
            "completions/_spank-carbon".into(),
            completion(cli, Shell::Zsh),
        ),
        (
            "completions/spank-carbon.fish".into(),
            completion(cli, Shell::Fish),
        ),
    ];
    let mut written = Vec::new();
    for (rel, bytes) in files {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, bytes)?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(cli: &Command, o: Options) -> ExitCode {
    let Some(out) = o.out else {
        print!("{README_KEYS_BEGIN}\n{}{README_KEYS_END}\n", readme_keys());
        return ExitCode::SUCCESS;
    };
    let date = o.date.unwrap_or_else(page_date);
    match write_all(cli, &out, &o.plugin, &date) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spank-carbon: docs: {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use spank_carbon::core::config::Config;

    fn cli() -> Command {
        let mut c = crate::Cli::command();
        c.build();
        c
    }

    const DATE: &str = "2026-12-01";

    #[test]
    fn every_command_and_option_is_in_the_page() {
        let cli = cli();
        let page = man8(&cli, DEFAULT_PLUGIN, DATE);
        let subs: Vec<&Command> = visible_subcommands(&cli).collect();
        assert!(subs.len() >= 8, "{} commands", subs.len());
        for sub in subs {
            let heading = format!(".SS spank\\-carbon {}\n", esc(sub.get_name()));
            assert!(page.contains(&heading), "no section for {}", sub.get_name());
            for a in visible_args(sub) {
                assert!(
                    !arg_help(a).is_empty(),
                    "{} {}: give the option a doc comment in main.rs (it is its man page text)",
                    sub.get_name(),
                    a.get_id()
                );
                if let Some(l) = a.get_long() {
                    let flag = format!("\\fB\\-\\-{}\\fR", esc(l));
                    assert!(page.contains(&flag), "{}: no --{l}", sub.get_name());
                }
            }
        }
        // Hidden things stay out: the docs command itself, report's --sacct-output.
        assert!(!page.contains(".SS spank\\-carbon docs"));
        assert!(!page.contains("sacct\\-output"));
        for needed in [
            "PrologFlags=Alloc",
            "plugstack.conf",
            "optional",
            DEFAULT_PLUGIN,
        ] {
            assert!(page.contains(&esc(needed)), "{needed}");
        }
    }

    /// A key's default value, as `Config::default()` has it.
    fn default_of(key: &str) -> Option<String> {
        let k = config::TABLE.iter().find(|k| k.name == key)?;
        k.default_value()
    }

    #[test]
    fn every_key_is_documented_with_its_default() {
        let docs: Vec<&str> = config::TABLE.iter().map(|k| k.name).collect();
        assert_eq!(config::KEYS, docs.as_slice());
        let page = man5(DEFAULT_PLUGIN, DATE);
        for k in config::TABLE {
            assert!(
                !k.doc.trim().is_empty(),
                "configuration key `{}` has no doc text in the key table (src/core/config.rs)",
                k.name
            );
            assert!(
                page.contains(&format!(".B {}\n", esc(k.name))),
                "{}",
                k.name
            );
            match default_of(k.name) {
                Some(v) => {
                    assert!(
                        page.contains(&format!("Default: {}.", esc(&v))),
                        "{}",
                        k.name
                    );
                    assert!(
                        k.unset.is_none(),
                        "`{}` has a default value: the key table must not say it has none",
                        k.name
                    );
                }
                None => assert!(
                    k.unset.is_some(),
                    "`{}` has no default: the key table must say what is used then",
                    k.name
                ),
            }
        }
        // A default the page shows is the code's (a changed constant changes the page).
        assert!(page.contains(&format!("Default: {}.", esc(config::DEFAULT_STATE_DIR))));
        assert!(page.contains(&format!("Default: {}.", config::DEFAULT_PUE)));
    }

    /// README.md's table of keys is the generated one (`spank-carbon docs --readme-keys`
    /// prints it): every key there, with its default and doc text.
    #[test]
    fn readme_holds_the_key_table() {
        let readme = include_str!("../../README.md");
        let begin = readme
            .lines()
            .position(|l| l == README_KEYS_BEGIN)
            .unwrap_or_else(|| panic!("README.md has no line {README_KEYS_BEGIN}"));
        let end = readme
            .lines()
            .skip(begin)
            .position(|l| l == README_KEYS_END)
            .unwrap_or_else(|| panic!("README.md has no line {README_KEYS_END}"))
            + begin;
        let table: Vec<&str> = readme
            .lines()
            .take(end)
            .skip(begin + 1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let want = readme_keys();
        assert_eq!(
            table,
            want.lines().collect::<Vec<_>>(),
            "README.md's key table is not the generated one: replace it with the output of \
             `spank-carbon docs --readme-keys`"
        );
        for k in config::TABLE {
            let row = format!("| `{}` | ", k.name);
            assert!(
                table.iter().any(|l| l.starts_with(&row)),
                "README.md has no line for `{}`",
                k.name
            );
        }
    }

    #[test]
    fn toml_example_holds_the_true_defaults() {
        let text = toml_example();
        // As shipped: all commented out, it parses and changes nothing.
        let mut c = Config::default();
        c.apply_toml(&text).unwrap();
        assert_eq!(c, Config::default());
        // Every key line uncommented: the defaults' give exactly the defaults, the others
        // (keys with no default) are example values the parser takes.
        let (mut defaults, mut examples) = (String::new(), String::new());
        for l in text.lines().filter_map(|l| l.strip_prefix('#')) {
            let Some((key, _)) = l.split_once(" = ") else {
                continue;
            };
            assert!(!key.starts_with(' '), "{l}");
            let to = if default_of(key).is_some() {
                &mut defaults
            } else {
                &mut examples
            };
            to.push_str(l);
            to.push('\n');
        }
        let with_default = config::KEYS
            .iter()
            .filter(|k| default_of(k).is_some())
            .count();
        assert_eq!(defaults.lines().count(), with_default, "{defaults}");
        let mut c = Config::default();
        c.apply_toml(&defaults).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(
            examples.lines().count(),
            config::TABLE
                .iter()
                .filter(|k| k.name != "config" && k.unset.is_some())
                .count(),
            "{examples}"
        );
        let mut c = Config::default();
        c.apply_toml(&examples).unwrap();
        assert_ne!(c, Config::default());
    }

    #[test]
    fn completions_name_every_command() {
        let cli = cli();
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let text = String::from_utf8(completion(&cli, shell)).unwrap();
            for sub in visible_subcommands(&cli) {
                assert!(text.contains(sub.get_name()), "{shell}: {}", sub.get_name());
            }
            assert!(
                !text.contains("docs"),
                "{shell}: the hidden docs command is offered"
            );
        }
    }

    /// The bash completion, run by bash: commands and each command's options complete.
    #[test]
    fn bash_completes_commands_and_options() {
        let dir = std::env::temp_dir().join(format!("sc-compl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("spank-carbon.bash");
        std::fs::write(&script, completion(&cli(), clap_complete::Shell::Bash)).unwrap();
        let complete = |words: &[&str]| -> String {
            let prog = format!(
                "source {}; COMP_WORDS=({}); COMP_CWORD={}; cd {}; _spank__carbon spank-carbon {} {}; echo \"${{COMPREPLY[@]}}\"",
                script.display(),
                words.join(" "),
                words.len() - 1,
                dir.display(),
                words[words.len() - 1],
                words[words.len() - 2],
            );
            let out = std::process::Command::new("bash")
                .args(["-c", &prog])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(complete(&["spank-carbon", "rep"]), "report");
        assert_eq!(complete(&["spank-carbon", "report", "--st"]), "--starttime");
        assert_eq!(
            complete(&["spank-carbon", "slurm-version", "--h"]),
            "--help"
        );
        let words = complete(&["spank-carbon", "fairshare", "--"]);
        for opt in ["--apply", "--restore", "--config", "--sacctmgr"] {
            assert!(words.split(' ').any(|w| w == opt), "{opt}: {words}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates() {
        assert_eq!(ymd(0), "1970-01-01");
        assert_eq!(ymd(19_723), "2024-01-01");
        assert_eq!(ymd(20_513), "2026-03-01");
        assert_eq!(ymd(11_016), "2000-02-29");
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("a-b \\x\n  c"), "a\\-b \\ex c");
        let mut o = String::new();
        line(&mut o, ".hidden request");
        line(&mut o, "'quote");
        assert_eq!(o, "\\&.hidden request\n\\&'quote\n");
    }

    /// mandoc's linter (scripts/package.sh installs mandoc) finds nothing in either page.
    #[test]
    fn pages_pass_mandoc_lint() {
        let dir = std::env::temp_dir().join(format!("sc-docs-{}", std::process::id()));
        let files = write_all(&cli(), &dir, DEFAULT_PLUGIN, DATE).unwrap();
        let lint = |page: &Path| match std::process::Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(page)
            .output()
        {
            Ok(out) => Some((
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => panic!("mandoc: {e}"),
        };
        let pages: Vec<&PathBuf> = files
            .iter()
            .filter(|f| f.to_string_lossy().contains("/man"))
            .collect();
        assert_eq!(pages.len(), 2);
        for page in pages {
            let Some((ok, text)) = lint(page) else {
                eprintln!(
                    "SKIPPED: mandoc is not installed (apt-get install mandoc): the pages were not linted"
                );
                std::fs::remove_dir_all(&dir).unwrap();
                return;
            };
            assert!(ok && text.trim().is_empty(), "{}: {text}", page.display());
        }
        // A page with a fault is reported: the check itself works.
        let bad = dir.join("bad.8");
        std::fs::write(
            &bad,
            ".TH BAD 8\n.SH NAME\nbad \\- x\n\n.SH DESCRIPTION\ntext \n",
        )
        .unwrap();
        let (ok, text) = lint(&bad).unwrap();
        assert!(
            !ok || !text.trim().is_empty(),
            "mandoc found nothing in a bad page"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
