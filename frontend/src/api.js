// Thin client of the sammed session API (/api). The access token, when the server has one,
// travels in the HttpOnly cookie set by opening /?token=...; the session key in a header.

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export class Api {
  constructor() {
    this.session = null; // {session_id, session_key, ...}
  }

  async request(method, path, { json, form, accept } = {}) {
    const headers = {};
    if (this.session) headers["X-Session-Key"] = this.session.session_key;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    const response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) {}
      throw new ApiError(response.status, detail);
    }
    if (accept === "raw") return response;
    if (response.status === 204) return null;
    return response.json();
  }

  info() {
    return this.request("GET", "/api/info");
  }

  files(folder = "") {
    return this.request("GET", `/api/files?folder=${encodeURIComponent(folder)}`);
  }

  async open(form) {
    const previous = this.session;
    this.session = null;
    const created = await this.request("POST", "/api/sessions", { form });
    if (previous) {
      // Close the old session with its own key; failure only means it already expired.
      fetch(`/api/sessions/${previous.session_id}`, { method: "DELETE", headers: { "X-Session-Key": previous.session_key } }).catch(() => {});
    }
    this.session = created;
    return created;
  }

  sessionPath(suffix = "") {
    return `/api/sessions/${this.session.session_id}${suffix}`;
  }

  state() {
    return this.request("GET", this.sessionPath());
  }

  async imageBuffer() {
    return (await this.request("GET", this.sessionPath("/image"), { accept: "raw" })).arrayBuffer();
  }

  point(mm, positive, objectId) {
    return this.request("POST", this.sessionPath("/points"), {
      json: { position: mm, positive, object_id: objectId, space: "world", convention: "RAS" },
    });
  }

  // voxels: [[i, j, k], ...] continuous voxel positions along the stroke
  scribble(voxels, positive, objectId) {
    return this.request("POST", this.sessionPath("/scribbles"), { json: { voxels, positive, object_id: objectId } });
  }

  // polygon: [[u, v], ...] the two voxel indices other than `axis` on slice `index`
  lasso(polygon, axis, index, positive, objectId) {
    return this.request("POST", this.sessionPath("/lassos"), { json: { polygon, axis, index, positive, object_id: objectId } });
  }

  rename(objectId, name) {
    return this.request("PUT", this.sessionPath(`/objects/${objectId}`), { json: { name } });
  }

  action(name, json) {
    return this.request("POST", this.sessionPath(`/${name}`), json === undefined ? {} : { json });
  }

  async labels(region) {
    const query = region ? `?offset=${region.offset.join(",")}&shape=${region.shape.join(",")}` : "";
    const response = await this.request("GET", this.sessionPath(`/labels${query}`), { accept: "raw" });
    const buffer = await response.arrayBuffer();
    const dtype = response.headers.get("X-Dtype");
    const values = dtype === "uint16" ? new Uint16Array(buffer) : new Uint8Array(buffer);
    const offset = response.headers.get("X-Offset").split(",").map(Number);
    const shape = response.headers.get("X-Shape").split(",").map(Number);
    return { values, offset, shape };
  }

  save(overwrite = false) {
    return this.request("POST", this.sessionPath("/save"), { json: { overwrite } });
  }

  async maskBlob() {
    return (await this.request("GET", this.sessionPath("/mask"), { accept: "raw" })).blob();
  }
}
