// A training job, live: status, stage, progress with ETA, the loss curve, the log; cancel and retry.

import { api } from "../api.js";
import { can } from "../app.js";
import { busy, fmt, h, replace } from "../dom.js";
import { lineChart } from "../chart.js";

const ENDED = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;

// The job's overall fraction done (0..1): the worker's `overall` when it reports one, else its stage's.
export function fractionDone(job) {
  const p = job.progress || {};
  if (job.status === "succeeded") return 1;
  if (Number.isFinite(p.overall)) return p.overall;
  return p.total ? p.iteration / p.total : 0;
}

function progressBlock(job) {
  const p = job.progress || {};
  const fraction = fractionDone(job);
  const eta = Number.isFinite(p.overall_eta_s) ? p.overall_eta_s : p.eta_s;
  return h("div", { class: "card", id: "job-progress" },
    h("p", {}, h("span", { class: `status ${job.status}`, id: "job-status" }, job.status),
      p.stage ? ` · ${p.stage}${p.total ? ` ${p.iteration}/${p.total}` : ""}` : "",
      ENDED.includes(job.status) ? "" : ` · about ${fmt.seconds(eta)} left`),
    h("progress", { max: 1, value: fraction, id: "job-bar" }), ` ${Math.round(100 * fraction)}%`,
    job.error ? h("p", { class: "error" }, job.error) : null,
    job.model_version_id ? h("p", {}, "Made ", h("a", { href: `#/versions/${job.model_version_id}`, id: "job-version" },
      "the new version")) : null);
}

function actions(job, reload) {
  if (!can("admin")) return null;
  const cancel = h("button", { id: "job-cancel", onclick: (e) => busy(e.target, async () => {
    await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
    await reload();
  }) }, "Cancel");
  const retry = h("button", { id: "job-retry", onclick: (e) => busy(e.target, async () => {
    await api(`/v1/jobs/${job.id}/retry`, { method: "POST" });
    await reload();
  }) }, "Retry");
  return h("p", {}, ENDED.includes(job.status) ? null : cancel,
    ["failed", "cancelled"].includes(job.status) ? retry : null);
}

// progress.curve: {stage: [[iteration, {loss: value}]]} -> one chart per stage, a line per loss term.
function curves(job) {
  const byStage = job.progress?.curve || {};
  return Object.entries(byStage).filter(([, points]) => points.length > 1).map(([stage, points]) => {
    const series = {};
    for (const [iteration, losses] of points) {
      for (const [name, value] of Object.entries(losses)) (series[name] ||= []).push([iteration, value]);
    }
    return h("div", { class: "card" }, h("h3", {}, `Losses: ${stage}`), lineChart(series, { xLabel: "iteration", yLabel: "loss" }));
  });
}

export async function jobView(main, jobId) {
  let timer = null;
  const reload = async () => {
    const job = await api(`/v1/jobs/${jobId}`);
    replace(main, h("nav", { class: "crumbs" }, h("a", { href: `#/projects/${job.project_id}` }, "Project"),
      ` / step ${job.step} / job ${job.id.slice(0, 8)}`),
    h("h1", {}, `Training step ${job.step} (${job.strategy})`), progressBlock(job), actions(job, reload),
    curves(job), h("h3", {}, "Log"), h("pre", { class: "log", id: "job-log" }, job.log || "(empty)"),
    h("p", { class: "small muted" }, `attempt ${job.attempt} · submitted ${fmt.when(job.created_at)}`,
      job.started_at ? ` · started ${fmt.when(job.started_at)}` : "",
      job.finished_at ? ` · finished ${fmt.when(job.finished_at)}` : ""));
    clearTimeout(timer);
    if (!ENDED.includes(job.status)) timer = setTimeout(() => reload().catch(() => {}), POLL_MS);
  };
  await reload();
  return () => clearTimeout(timer);
}
