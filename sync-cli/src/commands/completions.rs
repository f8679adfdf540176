//! `pqsync completions` and `pqsync man`: shell completions and man pages,
//! generated from the command-line definition itself.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::Session;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::ExitStatus;

/// Prints a completion script for the shell.
pub fn completions(a: &CompletionsArgs) -> Result<ExitStatus> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "pqsync", &mut std::io::stdout());
    Ok(ExitStatus::Success)
}

/// Writes `pqsync.1` and one page per command into the directory.
pub fn man(a: &ManArgs, s: &Session) -> Result<ExitStatus> {
    let written = write_man_pages(&a.dir)?;
    s.printer.info(&format!(
        "wrote {} man pages into {}",
        written.len(),
        a.dir.display()
    ));
    Ok(ExitStatus::Success)
}

/// Renders every man page into `dir`; returns the file names.
pub fn write_man_pages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = Vec::new();
    for (name, page) in man_pages()? {
        let path = dir.join(&name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        names.push(name);
    }
    Ok(names)
}

/// Every man page: `pqsync.1`, then `pqsync-COMMAND.1` for each command.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let cmd = Cli::command();
    let mut pages = vec![("pqsync.1".to_string(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("pqsync-{}", sub.get_name());
        let sub = sub.clone().name(&*Box::leak(name.clone().into_boxed_str()));
        pages.push((format!("{name}.1"), render(sub)?));
    }
    Ok(pages)
}

fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .date("")
        .render(&mut out)
        .context("rendering a man page")?;
    Ok(out)
}
