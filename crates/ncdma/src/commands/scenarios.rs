//! `ncdma scenarios`: the built-in scenarios `ncdma run` accepts by name, one line each.

use serde_json::json;

use crate::Output;
use crate::error::CliError;

pub(crate) fn run(json: bool) -> Output {
    let all = scenario::builtins()
        .map_err(|e| CliError::Failed(format!("a built-in scenario does not parse: {e}")))?;
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "summary": s.summary,
                    "kernel": s.vm.kernel.name(),
                    "vendor": s.vm.kernel.vendor.name(),
                })
            })
            .collect();
        return Ok(format!("{}\n", json!({ "scenarios": list })));
    }
    let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    Ok(all
        .iter()
        .map(|s| format!("{:width$}  {}\n", s.name, s.summary))
        .collect())
}
