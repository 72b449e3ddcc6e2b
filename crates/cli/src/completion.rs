//! Shell completion: scripts for the `kubectl-byoc` command, and the `__complete` protocol
//! through which kubectl (1.26 and later) completes `kubectl byoc <TAB>`.

use clap::builder::PossibleValue;
use clap::{Arg, Command, ValueHint};
use clap_complete::Shell;

/// The command name the scripts complete.
const BIN: &str = "kubectl-byoc";

/// The completion script of `shell` for `command`.
pub fn script(shell: Shell, mut command: Command) -> String {
    // clap_complete's bash script names subcommand cases inconsistently when the binary name
    // has a '-' (its root function maps '-' to "__", its subcommand cases to "__subcmd__"), so
    // nothing after the subcommand completes. Generate it for a name without '-' and register
    // it for the real one.
    let name = match shell {
        Shell::Bash => BIN.replace('-', ""),
        _ => BIN.to_owned(),
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    if name == BIN {
        return script;
    }
    script
        .lines()
        .map(|line| match line.trim_start().starts_with("complete ") {
            true => line.replace(&format!(" {name}"), &format!(" {BIN}")),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Cobra's directive: let the shell complete file names.
const FILE_COMPLETION: u8 = 0;
/// Cobra's directive: offer only the candidates given.
const NO_FILE_COMPLETION: u8 = 4;

/// What `kubectl byoc <TAB>` offers, in cobra's `__complete` format, which kubectl passes on to
/// the shell: one `candidate\tdescription` per line, then `:DIRECTIVE`. `words` are the
/// arguments after `byoc`, the last one being the word under the cursor (empty for a new word).
/// Candidates are subcommands, flags (after `-`), and the values a flag or argument accepts;
/// file arguments leave the completion to the shell.
pub fn kubectl_candidates(mut command: Command, words: &[String]) -> String {
    command.build();
    let (current, before) = words
        .split_last()
        .map_or(("", &[][..]), |(c, b)| (c.as_str(), b));
    let (command, pending) = walk(&command, before);
    let (candidates, directive) = match pending {
        // The word is the value of the flag before it.
        Some(flag) => values(flag, current, ""),
        None => match current.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                match command
                    .get_arguments()
                    .find(|a| long(a).as_deref() == Some(flag))
                {
                    Some(arg) => values(arg, value, &format!("{flag}=")),
                    None => (Vec::new(), NO_FILE_COMPLETION),
                }
            }
            _ if current.starts_with('-') => (flags(command, current), NO_FILE_COMPLETION),
            _ => words_after(command, current),
        },
    };
    let mut out: String = candidates.into_iter().map(|c| c + "\n").collect();
    out.push_str(&format!(":{directive}\n"));
    out
}

/// Follows `words` down the subcommands; returns the command reached and the flag whose value
/// comes next, if any.
fn walk<'c>(root: &'c Command, words: &[String]) -> (&'c Command, Option<&'c Arg>) {
    let mut command = root;
    let mut pending = None;
    for word in words {
        if pending.take().is_some() {
            continue;
        }
        let flag = if let Some(name) = word.strip_prefix("--") {
            if name.contains('=') {
                continue;
            }
            command.get_arguments().find(|a| a.get_long() == Some(name))
        } else if let Some(short) = word.strip_prefix('-').filter(|s| s.chars().count() == 1) {
            command
                .get_arguments()
                .find(|a| a.get_short().is_some_and(|c| short.starts_with(c)))
        } else {
            if let Some(sub) = command.find_subcommand(word) {
                command = sub;
            }
            continue;
        };
        pending = flag.filter(|a| a.get_action().takes_values());
    }
    (command, pending)
}

fn long(arg: &Arg) -> Option<String> {
    arg.get_long().map(|l| format!("--{l}"))
}

/// The subcommands and the values of positional arguments, or file names when the arguments
/// are files.
fn words_after(command: &Command, current: &str) -> (Vec<String>, u8) {
    let mut candidates: Vec<String> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name().starts_with(current))
        .map(|s| described(s.get_name(), s.get_about().map(ToString::to_string)))
        .collect();
    let mut directive = NO_FILE_COMPLETION;
    for arg in command.get_positionals() {
        let (values, wants) = values(arg, current, "");
        candidates.extend(values);
        directive = directive.min(wants);
    }
    (candidates, directive)
}

/// The flags of `command` that start with `current`.
fn flags(command: &Command, current: &str) -> Vec<String> {
    command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| Some((long(a)?, a)))
        .filter(|(name, _)| name.starts_with(current))
        .map(|(name, a)| described(&name, a.get_help().map(ToString::to_string)))
        .collect()
}

/// The values `arg` accepts that start with `current`, each after `prefix`.
fn values(arg: &Arg, current: &str, prefix: &str) -> (Vec<String>, u8) {
    let candidates = arg
        .get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set() && v.get_name().starts_with(current))
        .map(|v: PossibleValue| {
            let help = v.get_help().map(ToString::to_string);
            described(&format!("{prefix}{}", v.get_name()), help)
        })
        .collect();
    let files = matches!(
        arg.get_value_hint(),
        ValueHint::FilePath | ValueHint::AnyPath | ValueHint::DirPath
    );
    (
        candidates,
        if files {
            FILE_COMPLETION
        } else {
            NO_FILE_COMPLETION
        },
    )
}

/// `value\tfirst line of help`, as cobra shows candidates with descriptions.
fn described(value: &str, help: Option<String>) -> String {
    match help.as_deref().and_then(|h| h.lines().next()) {
        Some(line) if !line.trim().is_empty() => format!("{value}\t{}", line.trim()),
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command as Process;

    fn cli() -> Command {
        Command::new("kubectl-byoc")
            .bin_name("kubectl byoc")
            .subcommand(
                Command::new("grant")
                    .arg(clap::Arg::new("expires").long("expires"))
                    .arg(clap::Arg::new("namespace")),
            )
            .subcommand(Command::new("list"))
    }

    /// Completes `words` (the last one being typed) with the bash script.
    fn bash_complete(words: &[&str]) -> Vec<String> {
        let script = script(Shell::Bash, cli());
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; \
             _kubectlbyoc kubectl-byoc {cur:?} {prev:?}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words
                .iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Process::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn bash_completes_commands_and_their_flags() {
        let script = script(Shell::Bash, cli());
        assert!(
            script.contains("complete -F _kubectlbyoc -o bashdefault -o default kubectl-byoc\n")
        );
        assert_eq!(bash_complete(&["kubectl-byoc", "gr"]), ["grant"]);
        assert_eq!(
            bash_complete(&["kubectl-byoc", "grant", "tool-a", "--exp"]),
            ["--expires"]
        );
    }

    #[test]
    fn kubectl_candidates_follow_subcommands_flags_and_values() {
        let cli = Command::new("kubectl-byoc")
            .subcommand(
                Command::new("list").about("List grants\nmore help").arg(
                    clap::Arg::new("output")
                        .short('o')
                        .long("output")
                        .value_parser(["json", "yaml"]),
                ),
            )
            .subcommand(
                Command::new("check")
                    .arg(
                        clap::Arg::new("quiet")
                            .long("quiet")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .arg(clap::Arg::new("files").value_hint(ValueHint::FilePath)),
            )
            .subcommand(Command::new("secret").hide(true));
        let complete = |words: &[&str]| {
            let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
            kubectl_candidates(cli.clone(), &words)
        };
        let cases: &[(&[&str], &str)] = &[
            (
                &[],
                "list\tList grants\ncheck\nhelp\tPrint this message or the help of the given subcommand(s)\n:4\n",
            ),
            (&["l"], "list\tList grants\n:4\n"),
            (&["x"], ":4\n"),
            (&["list", "-o", ""], "json\nyaml\n:4\n"),
            (&["list", "--output", "y"], "yaml\n:4\n"),
            (&["list", "--output=j"], "--output=json\n:4\n"),
            (&["list", "-o", "json", "--o"], "--output\n:4\n"),
            // A flag without a value does not swallow the next word.
            (&["check", "--quiet", ""], ":0\n"),
            (&["check", "--q"], "--quiet\n:4\n"),
            (&["check", "a.yaml", ""], ":0\n"),
        ];
        for (words, want) in cases {
            assert_eq!(complete(words), *want, "{words:?}");
        }
    }

    #[test]
    fn other_shells_complete_the_binary() {
        assert!(script(Shell::Zsh, cli()).starts_with("#compdef kubectl-byoc\n"));
        assert!(script(Shell::Fish, cli()).contains("complete -c kubectl-byoc "));
    }
}
