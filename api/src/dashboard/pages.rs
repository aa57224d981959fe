//! The pages: the pools (`/`) and one pool (`/pools/<id>`), each with the fragment
//! htmx polls to refresh it in place (`/pools.html`, `/pools/<id>/panels.html`).
//!
//! A page is its fragment inside the layout, so a refresh swaps exactly what the page
//! first showed and the ids the browser test relies on (`#pools`, `#plan-report`,
//! `#workers`, `#errors`) are there after every swap. What a client sees follows its
//! read scopes: pools its `pools:read` patterns match, workers where it also holds
//! `workers:read`.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::Response;
use capstan_core::{PoolId, SkipReason, SkippedOffering, Timestamp, Worker};
use store::{PoolCapacity, PoolRecord, PoolStatus};

use super::html::{Esc, age, clock, page, pool_href};
use super::html_response;
use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::ApiError;

/// How far back the pools page looks for a pool's latest queue sample; older, the
/// pending count shows as unknown.
const SAMPLE_FRESH_S: i64 = 300;
/// The window of "errors in the last hour".
const ERRORS_WINDOW_S: i64 = 3600;
/// Most workers and errors listed on a pool's page.
const MAX_ROWS: usize = 500;
/// How often the pages refresh themselves.
pub const REFRESH: &str = "every 5s";

/// What a pools-page row shows of one pool.
struct PoolRow {
    record: PoolRecord,
    capacity: PoolCapacity,
    pending: Option<u32>,
    target: Option<u32>,
    errors_last_hour: usize,
}

/// Whether the caller holds any read scope the dashboard can use.
fn reads_anything(c: &Caller) -> bool {
    c.may_any(Action::PoolsRead) || c.may_any(Action::WorkersRead)
}

async fn pending_now(
    state: &AppState,
    id: &PoolId,
    now: Timestamp,
) -> Result<Option<u32>, ApiError> {
    let samples = state
        .store
        .queue_samples(
            id,
            now.plus_secs(-SAMPLE_FRESH_S),
            now.plus_secs(crate::queue::MAX_FUTURE_S + 1),
        )
        .await?;
    Ok(samples.last().map(|s| s.pending))
}

async fn row(state: &AppState, record: PoolRecord, now: Timestamp) -> Result<PoolRow, ApiError> {
    let id = record.spec.id.clone();
    let workers = state.store.list_workers(&id, false).await?;
    let status = state.store.pool_status(&id).await?;
    let errors = state.store.list_pool_errors(&id).await?;
    let since = now.plus_secs(-ERRORS_WINDOW_S);
    Ok(PoolRow {
        capacity: PoolCapacity::of(&record.spec, &workers),
        pending: pending_now(state, &id, now).await?,
        target: status.map(|s| s.plan.report.target_slots),
        errors_last_hour: errors.iter().filter(|e| e.last_seen >= since).count(),
        record,
    })
}

/// The badges of a pool: dry run (its own, or the service's), deleting.
fn badges(state: &AppState, record: &PoolRecord) -> String {
    let mut out = String::new();
    if record.spec.scaling.dry_run {
        out.push_str(
            " <span class=\"badge dry-run\" title=\"scaling.dry_run is set: plans are recorded, nothing is launched or terminated\">dry run</span>",
        );
    } else if state.dry_run {
        out.push_str(
            " <span class=\"badge dry-run\" title=\"the service runs with --dry-run: plans are recorded, nothing is launched or terminated\">dry run</span>",
        );
    }
    if record.deleting_since.is_some() {
        out.push_str(
            " <span class=\"badge deleting\" title=\"a delete was asked for: its workers drain, then it is removed\">deleting</span>",
        );
    }
    out
}

fn cost(c: &PoolCapacity) -> String {
    let at_least = if c.unpriced_instances > 0 { "≥ " } else { "" };
    format!("{at_least}{:.2}/h", c.cost_per_hour)
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// The inside of `<table id="pools">`.
pub async fn pools_table(state: &AppState, caller: &Caller) -> Result<String, ApiError> {
    let now = state.now();
    let mut rows = Vec::new();
    for record in state.store.list_pools().await? {
        if caller.may(Action::PoolsRead, record.spec.id.as_str()) {
            rows.push(row(state, record, now).await?);
        }
    }
    let mut out = String::from(
        "<thead><tr><th>Pool</th><th title=\"slots of workers whose launch is recorded\">Requested</th>\
         <th title=\"slots of machines booting, not registered yet\">Booting</th>\
         <th title=\"ready slots running nothing\">Ready idle</th><th title=\"ready slots running a task\">Ready busy</th>\
         <th title=\"slots finishing their tasks before they go\">Draining</th>\
         <th title=\"tasks waiting, latest queue sample of the last 5 minutes\">Pending</th>\
         <th title=\"slots the latest plan aims for\">Target</th>\
         <th title=\"launch-config prices × live machines\">Cost</th>\
         <th title=\"distinct problems seen in the last hour\">Errors (1 h)</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        out.push_str(
            "<tr class=\"empty\"><td colspan=\"10\">No pool your client may read (pools:read) exists yet.</td></tr>",
        );
    }
    for r in &rows {
        let id = r.record.spec.id.as_str();
        let c = &r.capacity;
        let _ = write!(
            out,
            "<tr data-pool-id=\"{eid}\"><td><a class=\"pool-link\" href=\"{href}\">{eid}</a>{badges}\
             <div class=\"description\">{desc}</div></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td></tr>",
            c.requested,
            c.booting,
            c.ready_idle,
            c.ready_busy,
            c.draining,
            opt(r.pending),
            opt(r.target),
            cost(c),
            if r.errors_last_hour > 0 { "errors" } else { "" },
            r.errors_last_hour,
            eid = Esc(id),
            href = Esc(&pool_href(id)),
            badges = badges(state, &r.record),
            desc = Esc(&r.record.spec.description),
        );
    }
    out.push_str("</tbody>");
    Ok(out)
}

/// The explanation a client with no read scope gets instead of any data.
fn nothing_to_read(caller: &Caller) -> String {
    format!(
        "<section class=\"no-scope\"><h1>Nothing to show</h1><p>Client <strong>{}</strong> holds no read \
         scope, so the dashboard shows nothing. It reads what <code>pools:read:&lt;pools&gt;</code> \
         (pools, their plans, charts and errors) and <code>workers:read:&lt;pools&gt;</code> (their \
         workers) allow; ask an administrator for, e.g., <code>pools:read:ci/*</code>.</p></section>",
        Esc(&caller.name)
    )
}

/// `/`: the pools.
pub async fn pools_page(state: &AppState, caller: &Caller) -> Result<Response, ApiError> {
    if !reads_anything(caller) {
        return Ok(html_response(
            StatusCode::OK,
            page("Pools", Some(caller), &nothing_to_read(caller)),
        ));
    }
    let table = pools_table(state, caller).await?;
    let service = if state.dry_run {
        "<p class=\"banner dry-run\">The service runs in dry-run mode: every pool's plans are recorded, \
         nothing is launched or terminated.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Pools</h1>{service}\
         <table id=\"pools\" hx-get=\"/pools.html\" hx-trigger=\"{REFRESH}\" hx-swap=\"innerHTML\">{table}</table>\
         <p class=\"legend\">Capacity is counted in task slots. The page refreshes itself every 5 s.</p>"
    );
    Ok(html_response(
        StatusCode::OK,
        page("Pools", Some(caller), &body),
    ))
}

/// The pool `raw` names, if the caller may read it: 403 without `pools:read:<id>`,
/// 404 when it does not exist.
pub async fn readable_pool(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<PoolRecord, ApiError> {
    let id = PoolId::new(raw)
        .map_err(|e| ApiError::not_found(format!("no pool {raw:?}: a pool id {e}")))?;
    caller.require(Action::PoolsRead, id.as_str())?;
    state
        .store
        .get_pool(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pool {id}")))
}

/// The plan report: the latest plan in words, the forecast behind it, the plans that
/// acted in the last hour.
async fn plan_report(
    state: &AppState,
    record: &PoolRecord,
    status: Option<&PoolStatus>,
    now: Timestamp,
) -> Result<String, ApiError> {
    let mut out = String::from("<section id=\"plan-report\"><h2>Latest plan</h2>");
    let Some(s) = status else {
        out.push_str(
            "<p>The reconcile loop has not planned this pool yet: it records a plan and a forecast at \
             its first tick for the pool.</p></section>",
        );
        return Ok(out);
    };
    let r = &s.plan.report;
    let f = &s.forecast;
    let service_level = record.spec.scaling.service_level * 100.0;
    let _ = write!(
        out,
        "<p class=\"headline\">Target {} slots. The {} policy forecasts now + {:.0} s (the \
         launch-to-ready lead): {:.1} busy slots expected, {} needed at the {:.0}% service level; \
         the backlog asks for {}.</p>",
        r.target_slots,
        Esc(f.policy.as_str()),
        f.lead_s,
        f.expected_busy_slots,
        f.target_slots,
        service_level,
        f.backlog_slots,
    );
    out.push_str("<ul class=\"clauses\">");
    // The plan's own summary, each skipped offering's time read as a clock ("until
    // 12:03:00 UTC"), not an RFC 3339 stamp.
    for clause in s.plan.summary_with(|o| skipped_words(o, now)).split("; ") {
        let _ = write!(out, "<li>{}</li>", Esc(clause));
    }
    out.push_str("</ul>");
    if let Some(idle) = r.idle_timeout_s {
        let how = if r.idle_timeout_chosen {
            "chosen by capstan from the boot time and the observed idle gaps (the spec leaves \
             <code>scaling.idle_timeout_s</code> out)"
        } else {
            "set by <code>scaling.idle_timeout_s</code>"
        };
        let _ = write!(
            out,
            "<p class=\"idle-timeout\">Idle workers above {} slots go after {idle:.0} s idle: \
             {how}.</p>",
            r.keep_slots,
        );
    }
    let dry = if record.spec.scaling.dry_run || state.dry_run {
        " Dry run: recorded, not applied."
    } else {
        ""
    };
    let _ = write!(
        out,
        "<p class=\"meta\">Planned at {} ({} ago) by {}.{dry}</p>",
        clock(s.at, now),
        age(now.secs_since(s.at)),
        Esc(&s.owner),
    );
    let recent =
        crate::plans::recent_plans(&state.store, &record.spec.id, now.plus_secs(-3600)).await?;
    if !recent.is_empty() {
        out.push_str("<h3>Plans that acted in the last hour</h3><ul class=\"recent\">");
        for p in recent.iter().take(10) {
            let _ = write!(
                out,
                "<li><time>{}</time> {}</li>",
                clock(p.at, now),
                Esc(&p.summary)
            );
        }
        if recent.len() > 10 {
            let _ = write!(out, "<li>… and {} more</li>", recent.len() - 10);
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
    Ok(out)
}

/// Why an offering was skipped, in words, times as clocks.
fn skipped_words(o: &SkippedOffering, now: Timestamp) -> String {
    let why = match &o.reason {
        SkipReason::Unavailable { until, reason } => {
            format!("{reason}, until {}", clock(*until, now))
        }
        other => other.words(|t| clock(t, now)),
    };
    format!("{} skipped: {why}", o.launch_config_id)
}

fn workers_table(workers: &[Worker], now: Timestamp) -> String {
    let mut out = String::from(
        "<thead><tr><th>Worker</th><th>State</th><th>Launch config</th><th>Instance</th>\
         <th>Busy / slots</th><th>Age</th><th>In state</th><th>Last heartbeat</th></tr></thead><tbody>",
    );
    if workers.is_empty() {
        out.push_str("<tr class=\"empty\"><td colspan=\"8\">No live workers.</td></tr>");
    }
    for w in workers.iter().take(MAX_ROWS) {
        let _ = write!(
            out,
            "<tr data-worker-id=\"{id}\" class=\"state-{state}\"><td>{id}</td><td>{state}</td><td>{lc}</td>\
             <td>{inst}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.busy_slots,
            w.capacity,
            age(now.secs_since(w.created_at)),
            age(now.secs_since(w.state_changed_at)),
            w.last_heartbeat_at.map_or_else(
                || "—".to_owned(),
                |t| format!("{} ago", age(now.secs_since(t)))
            ),
            id = Esc(w.id.as_str()),
            state = Esc(w.state.as_str()),
            lc = Esc(w.launch_config_id.as_deref().unwrap_or("—")),
            inst = Esc(w.instance_id.as_deref().unwrap_or("—")),
        );
    }
    if workers.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<tr class=\"more\"><td colspan=\"8\">… and {} more (the API lists them all)</td></tr>",
            workers.len() - MAX_ROWS
        );
    }
    out.push_str("</tbody>");
    out
}

/// The inside of `<div id="live">` on a pool's page: summary, plan report, workers,
/// errors.
pub async fn pool_panels(
    state: &AppState,
    caller: &Caller,
    record: &PoolRecord,
) -> Result<String, ApiError> {
    let now = state.now();
    let id = &record.spec.id;
    let workers = state.store.list_workers(id, false).await?;
    let status = state.store.pool_status(id).await?;
    let errors = state.store.list_pool_errors(id).await?;
    let c = PoolCapacity::of(&record.spec, &workers);
    let pending = pending_now(state, id, now).await?;
    let mut out = String::new();
    let _ = write!(
        out,
        "<section id=\"summary\"><dl>\
         <div><dt>Requested</dt><dd>{}</dd></div><div><dt>Booting</dt><dd>{}</dd></div>\
         <div><dt>Ready idle</dt><dd>{}</dd></div><div><dt>Ready busy</dt><dd>{}</dd></div>\
         <div><dt>Draining</dt><dd>{}</dd></div><div><dt>Pending</dt><dd>{}</dd></div>\
         <div><dt>Target</dt><dd>{}</dd></div><div><dt>Cost</dt><dd>{}</dd></div>\
         <div><dt>Capacity</dt><dd>{}–{} slots</dd></div></dl></section>",
        c.requested,
        c.booting,
        c.ready_idle,
        c.ready_busy,
        c.draining,
        opt(pending),
        opt(status.as_ref().map(|s| s.plan.report.target_slots)),
        cost(&c),
        record.spec.min_capacity,
        record.spec.max_capacity,
    );
    out.push_str(&plan_report(state, record, status.as_ref(), now).await?);

    out.push_str("<section class=\"workers\"><h2>Workers</h2><table id=\"workers\">");
    if caller.may(Action::WorkersRead, id.as_str()) {
        out.push_str(&workers_table(&workers, now));
    } else {
        let _ = write!(
            out,
            "<caption>Client {} lacks workers:read:{}, so the pool's workers are not listed.</caption>",
            Esc(&caller.name),
            Esc(id.as_str())
        );
    }
    out.push_str("</table></section>");

    out.push_str(
        "<section class=\"errors\"><h2>Errors</h2><table id=\"errors\"><thead><tr><th>Kind</th>\
         <th>Launch config</th><th>Message</th><th>Count</th><th>First seen</th><th>Last seen</th>\
         </tr></thead><tbody>",
    );
    if errors.is_empty() {
        out.push_str("<tr class=\"empty\"><td colspan=\"6\">No errors recorded.</td></tr>");
    }
    let recent = now.plus_secs(-ERRORS_WINDOW_S);
    for e in errors.iter().take(MAX_ROWS) {
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"message\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if e.last_seen >= recent {
                "recent"
            } else {
                "old"
            },
            Esc(&e.kind),
            Esc(e.launch_config_id.as_deref().unwrap_or("—")),
            Esc(&e.message),
            e.count,
            clock(e.first_seen, now),
            clock(e.last_seen, now),
        );
    }
    out.push_str("</tbody></table></section>");
    Ok(out)
}

/// `/pools/<id>`: the chart, then the live panels.
pub async fn pool_page(
    state: &AppState,
    caller: &Caller,
    record: &PoolRecord,
) -> Result<Response, ApiError> {
    let id = record.spec.id.as_str();
    let href = pool_href(id);
    let panels = pool_panels(state, caller, record).await?;
    let description = if record.spec.description.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"description\">{}</p>",
            Esc(&record.spec.description)
        )
    };
    let body = format!(
        "<h1><a href=\"/\">Pools</a> / {eid}{badges}</h1>{description}\
         <section class=\"chart-panel\"><div class=\"windows\" role=\"group\" aria-label=\"window\">\
         <button type=\"button\" data-window=\"1h\" aria-pressed=\"true\">1 h</button>\
         <button type=\"button\" data-window=\"1d\" aria-pressed=\"false\">1 d</button>\
         <button type=\"button\" data-window=\"1w\" aria-pressed=\"false\">1 w</button></div>\
         <div id=\"chart\" data-src=\"{ehref}/chart.json\"></div>\
         <p class=\"legend\">Slots and tasks over time: capacity by state (stacked), tasks pending and \
         running, the plan's target, the forecast's mean with its band up to the service level; \
         ▲ launches and ▼ terminations of the plans that acted.</p></section>\
         <div id=\"live\" hx-get=\"{ehref}/panels.html\" hx-trigger=\"{REFRESH}\" hx-swap=\"innerHTML\">{panels}</div>",
        eid = Esc(id),
        ehref = Esc(&href),
        badges = badges(state, record),
    );
    Ok(html_response(StatusCode::OK, page(id, Some(caller), &body)))
}
