//! `regatta status`: the whole cluster as a table, from any one member's
//! address.

use serde_json::Value;

use crate::Endpoint;

/// Asks one member for the configuration, then every member
/// for its own state; prints one row per member.
pub async fn print(at: &Endpoint) -> Result<(), String> {
    let client = at.client()?;
    let seed = client
        .get_from(&at.endpoint, "/cluster/stats")
        .await
        .ok_or_else(|| {
            format!(
                "{} does not answer GET /cluster/stats: is a node serving there?",
                at.endpoint
            )
        })?;
    let membership = &seed["status"]["membership"];
    let mut ids: Vec<u64> = ["voters", "learners"]
        .iter()
        .flat_map(|k| membership[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let api_of = |id: u64| -> Option<String> {
        membership["metadata"][id.to_string()]["api"]
            .as_str()
            .map(str::to_string)
    };
    let mut answers: Vec<(u64, Option<String>, Option<Value>)> = Vec::new();
    for id in ids {
        let api = api_of(id);
        let answer = if seed["status"]["id"] == id {
            Some(seed.clone())
        } else {
            match &api {
                Some(api) => client.get_from(api, "/cluster/stats").await,
                None => None,
            }
        };
        answers.push((id, api, answer));
    }
    let leader = answers
        .iter()
        .filter_map(|(_, _, s)| s.as_ref())
        .filter(|s| s["status"]["role"] == "leader")
        .max_by_key(|s| s["status"]["term"].as_u64());
    let header = [
        "ID",
        "API",
        "RAFT",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAST LOG",
        "SNAPSHOT",
        "LAG",
        "CONTACT",
        "COMMIT P99",
    ];
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for (id, api, answer) in &answers {
        let raft = membership["addresses"][id.to_string()]
            .as_str()
            .unwrap_or("")
            .to_string();
        let text = |v: &Value| match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let progress = leader.map(|l| &l["status"]["replication"][id.to_string()]);
        let is_leader = leader.is_some_and(|l| l["status"]["id"] == *id);
        let lag = if is_leader {
            "0".into()
        } else {
            progress.map(|p| text(&p["lag"])).unwrap_or_default()
        };
        let contact = progress
            .and_then(|p| p["last_contact_ms"].as_u64())
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_default();
        let row = match answer {
            Some(s) => {
                let st = &s["status"];
                let p99 = if is_leader {
                    serde_json::from_value::<regatta::Histogram>(
                        s["histograms"]["commit_latency_us"].clone(),
                    )
                    .ok()
                    .and_then(|h| h.quantile(0.99))
                    .map(|us| format!("≤{:.1} ms", us as f64 / 1000.0))
                    .unwrap_or_default()
                } else {
                    String::new()
                };
                vec![
                    id.to_string(),
                    api.clone().unwrap_or_default(),
                    raft,
                    text(&st["role"]),
                    text(&st["term"]),
                    text(&st["leader"]),
                    text(&st["commit_index"]),
                    text(&st["last_applied"]),
                    text(&st["last_log_index"]),
                    text(&st["snapshot_index"]),
                    lag,
                    contact,
                    p99,
                ]
            }
            None => {
                let mut row = vec![
                    id.to_string(),
                    api.clone().unwrap_or_else(|| "(no api address)".into()),
                    raft,
                    "unreachable".into(),
                ];
                row.resize(header.len() - 3, String::new());
                row.extend([lag, contact, String::new()]);
                row
            }
        };
        rows.push(row);
    }
    print_table(&rows);
    match leader {
        Some(l) => println!(
            "leader: node {} in term {}",
            l["status"]["id"], l["status"]["term"]
        ),
        None => println!("no member reports itself leader"),
    }
    Ok(())
}

pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    println!("{rule}");
    for (i, row) in rows.iter().enumerate() {
        let line: String = widths
            .iter()
            .enumerate()
            .map(|(c, w)| {
                let cell = row.get(c).map_or("", String::as_str);
                format!("| {cell}{} ", " ".repeat(w - cell.chars().count()))
            })
            .collect();
        println!("{line}|");
        if i == 0 {
            println!("{rule}");
        }
    }
    println!("{rule}");
}
