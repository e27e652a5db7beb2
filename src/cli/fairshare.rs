//! `spank-carbon fairshare`: prints the plan (dry run); `--apply` sets the shares;
//! `--restore` puts the operator's shares back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use spank_carbon::core::fairshare::{decayed_g, plan, Owned, PlanRow, Policy, State};
use spank_carbon::core::report::{self, FIELDS};
use spank_carbon::node::state;
use spank_carbon::record::num;
use spank_carbon::slurm::run::run_tool;
use spank_carbon::slurm::sacct_rows::{self, SacctCall};
use spank_carbon::units::unix_now;

/// Time limit of one sacctmgr call.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    /// The policy file (TOML: half_life_days, lookback_days, floor, state, field,
    /// sacct_timeout_s and a [budget_kg] table of accounts).
    #[arg(long, default_value = "/etc/spank-carbon/fairshare.toml")]
    config: PathBuf,
    /// Set the planned shares (without it: print the plan only).
    #[arg(long, conflicts_with = "restore")]
    apply: bool,
    /// Put the operator's shares back.
    #[arg(long)]
    restore: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Slurm's sacct.
    #[arg(long, default_value = "/usr/bin/sacct")]
    sacct: PathBuf,
    /// Slurm's sacctmgr.
    #[arg(long, default_value = "/usr/bin/sacctmgr")]
    sacctmgr: PathBuf,
}

fn field_name(f: &str) -> &'static str {
    match f {
        "admin" => "AdminComment",
        "job" => "Comment",
        _ => "SystemComment",
    }
}

/// Account-level shares, from `sacctmgr show assoc`.
fn current_shares(o: &Args, accounts: &[&String]) -> Result<BTreeMap<String, u32>, String> {
    let list = accounts
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let cond = format!("account={list}");
    let out = run_tool(
        &o.sacctmgr,
        &[
            "-n",
            "-P",
            "show",
            "assoc",
            "where",
            &cond,
            "format=Account,User,Fairshare",
        ],
        TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "sacctmgr show assoc: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut shares = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if let [account, "", share] = f.as_slice() {
            if let Ok(n) = share.parse::<u32>() {
                shares.insert(account.to_string(), n);
            }
        }
    }
    Ok(shares)
}

/// Each account's decayed CO2e (g), streamed from sacct (rows framed by a fresh
/// delimiter: no comment can forge a job), killed after `sacct_timeout_s`.
fn usage(o: &Args, policy: &Policy) -> Result<BTreeMap<String, f64>, String> {
    // sacct's relative times count seconds by default.
    let start = format!("now-{}", (policy.lookback_days * 86_400.0).ceil() as u64);
    let format = format!("{FIELDS},{}", field_name(&policy.field));
    // -D: every run of a requeued job has its row, and each run counts once.
    let args: Vec<String> = ["-a", "-D", "-X", "-n", "-S", &start, "-o", &format]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let call = SacctCall {
        sacct: &o.sacct,
        args: &args,
        timeout: Some(Duration::from_secs(policy.sacct_timeout_s)),
        clear_env: true,
    };
    let now = unix_now();
    sacct_rows::run_streamed(&call, |out, delim| {
        let mut usage: BTreeMap<String, f64> = BTreeMap::new();
        // (job, run, node) counted: a run's part may stand in two rows of the job.
        let mut counted: std::collections::BTreeSet<(u32, Option<u64>, String)> =
            Default::default();
        report::stream(out, delim, |row| {
            for (run, mut seg) in spank_carbon::record::parse_all(&row.field) {
                if run.is_some() {
                    seg.parts
                        .retain(|node, _| counted.insert((row.job, run, node.clone())));
                }
                *usage.entry(row.account.clone()).or_default() += decayed_g(policy, &seg, now);
            }
        })
        .map_err(|e| format!("sacct: {e}"))?;
        Ok(usage)
    })
}

fn set_shares(o: &Args, account: &str, shares: u32) -> Result<(), String> {
    let cond = format!("name={account}");
    let set = format!("fairshare={shares}");
    let out = run_tool(
        &o.sacctmgr,
        &["-i", "modify", "account", "where", &cond, "set", &set],
        TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sacctmgr modify account {account}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn load_state(path: &Path) -> Result<State, String> {
    state::read_json(path)
        .map(|s| s.unwrap_or_default())
        .map_err(|e| e.to_string())
}

fn save_state(path: &Path, s: &State) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    state::write_json_durable(path, s).map_err(|e| e.to_string())
}

pub fn run(o: Args) -> ExitCode {
    match run_inner(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spank-carbon fairshare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(o: &Args) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&o.config).map_err(|e| format!("{}: {e}", o.config.display()))?;
    let policy = Policy::parse(&text, &o.config).map_err(|e| e.to_string())?;
    let mut st = load_state(&policy.state)?;
    if o.restore {
        let accounts: Vec<&String> = st.accounts.keys().collect();
        let current = if accounts.is_empty() {
            BTreeMap::new()
        } else {
            current_shares(o, &accounts)?
        };
        for (account, owned) in &st.accounts {
            match current.get(account) {
                Some(&now) if now == owned.set => {
                    set_shares(o, account, owned.base)?;
                    println!("{account}: shares {now} -> {} (restored)", owned.base);
                }
                Some(&now) => {
                    println!("{account}: shares {now} were set by someone else; left as they are")
                }
                None => println!("{account}: no longer in accounting"),
            }
        }
        st.accounts.clear();
        return save_state(&policy.state, &st);
    }
    let accounts: Vec<&String> = policy.budget_kg.keys().collect();
    let current = current_shares(o, &accounts)?;
    let usage = usage(o, &policy)?;
    let rows: Vec<PlanRow> = plan(&policy, &st, &current, &usage);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
    } else {
        println!(
            "{:<16} {:>8} {:>8} {:>12} {:>12} {:>7} {:>8}  note",
            "account", "base", "current", "CO2e kg", "budget kg", "factor", "new"
        );
        for r in &rows {
            println!(
                "{:<16} {:>8} {:>8} {:>12} {:>12} {:>7} {:>8}  {}",
                r.account,
                r.base,
                r.current,
                num(r.usage_kg, 6),
                num(r.budget_kg, 6),
                num(r.factor, 3),
                r.new,
                r.note.as_deref().unwrap_or("")
            );
        }
        for a in &accounts {
            if !current.contains_key(*a) {
                println!("{a}: not in accounting; skipped");
            }
        }
    }
    if !o.apply {
        if !o.json {
            println!("(dry run: nothing changed; --apply to set these shares)");
        }
        return Ok(());
    }
    for r in &rows {
        if r.new != r.current {
            set_shares(o, &r.account, r.new)?;
        }
        st.accounts.insert(
            r.account.clone(),
            Owned {
                base: r.base,
                set: r.new,
            },
        );
        save_state(&policy.state, &st)?;
    }
    if !o.json {
        println!("applied");
    }
    Ok(())
}
