// The API client of the console: the key lives in this tab's session storage only (never in a URL or a
// cookie), every request carries it as a Bearer token, and every error becomes an ApiError with the
// problem document's detail.

const KEY = "kamp.apiKey";

export class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status;
    this.problem = problem;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

function headers(extra = {}) {
  const key = session.key();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function problemOf(response) {
  let problem = null;
  try {
    problem = await response.json();
  } catch {
    problem = null;
  }
  const detail = (problem && (problem.detail || problem.title)) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, detail, problem);
}

// A JSON request: `json` is sent as the body; `form` (FormData) as multipart. Answers the parsed JSON.
export async function api(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  return response.json();
}

// A binary answer (an image, a checkpoint, an SR) as a Blob.
export async function apiBlob(path, { method = "GET", form } = {}) {
  const response = await fetch(path, { method, headers: headers(), body: form });
  if (!response.ok) throw await problemOf(response);
  return response.blob();
}

// An upload with progress (fetch cannot report it): `onProgress(fraction)`; answers the parsed JSON.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = session.key();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError(0, "the upload did not reach the server", null));
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, (body && (body.detail || body.title)) || `${xhr.status}`, body));
    };
    xhr.send(form);
  });
}

let openapi = null; // the service's OpenAPI document, read once: the choices the API accepts live there

// The JSON schema of one of the API's components (e.g. "ProjectIn").
export async function schemaOf(name) {
  openapi ||= api("/openapi.json").catch((error) => {
    openapi = null; // not kept: the next call asks again
    throw error;
  });
  return (await openapi).components.schemas[name];
}

// A stored study predicted by the project's active version (or `versionId`): its display image posted back
// with the study's spacing, as a client would post the file.
export function predictStudy(projectId, study, blob, versionId = null) {
  const form = new FormData();
  form.append("file", blob, "study.png");
  if (versionId) form.append("version_id", versionId);
  if (study.spacing.x_mm && study.spacing.y_mm) {
    form.append("spacing_x_mm", study.spacing.x_mm);
    form.append("spacing_y_mm", study.spacing.y_mm);
  }
  return api(`/v1/projects/${projectId}/predict`, { method: "POST", form });
}
