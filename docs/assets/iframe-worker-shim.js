/* A Web Worker for pages opened from the file system, so the site's search works offline.

   Browsers refuse `new Worker(url)` on a file:// page. mkdocs-material's `offline` plugin then
   loads a polyfill from a CDN (unpkg.com/iframe-worker); mkdocs.yml names this file in
   `extra.polyfills` instead, so the site makes no network request. On file:// pages it replaces
   `Worker` by one that runs the worker's script in a hidden same-origin iframe: the page's
   `worker.postMessage(data)` becomes a "message" event in the iframe, and the script's
   `postMessage(data)` a "message" event on the worker object. Elsewhere it does nothing. */
(function () {
  "use strict";
  if (location.protocol !== "file:" || typeof EventTarget !== "function") return;

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.onmessage = null;
      this.onerror = null;
      this._pending = [];
      this._ready = false;
      const frame = document.createElement("iframe");
      frame.style.display = "none";
      frame.setAttribute("aria-hidden", "true");
      (document.body || document.documentElement).appendChild(frame);
      this._frame = frame;
      const scope = frame.contentWindow;
      const worker = this;
      // What the worker's script sees as its global scope's messaging.
      scope.postMessage = function (data) {
        setTimeout(function () { worker._emit("message", data); }, 0);
      };
      scope.importScripts = function () {
        throw new Error("importScripts is not available to a worker of a file:// page");
      };
      const script = scope.document.createElement("script");
      script.src = new URL(String(url), location.href).href;
      script.onload = function () {
        worker._ready = true;
        worker._pending.splice(0).forEach(function (data) { worker._deliver(data); });
      };
      script.onerror = function () { worker._emit("error", new Error("cannot load worker script " + url)); };
      scope.document.head.appendChild(script);
    }

    _emit(type, data) {
      const event = type === "message" ? new MessageEvent("message", { data: data }) : new ErrorEvent("error", { error: data, message: String(data) });
      const handler = type === "message" ? this.onmessage : this.onerror;
      if (typeof handler === "function") handler.call(this, event);
      this.dispatchEvent(event);
    }

    _deliver(data) {
      const scope = this._frame.contentWindow;
      scope.dispatchEvent(new scope.MessageEvent("message", { data: data }));
    }

    postMessage(data) {
      if (this._ready) this._deliver(data);
      else this._pending.push(data);
    }

    terminate() {
      if (this._frame.parentNode) this._frame.parentNode.removeChild(this._frame);
    }
  }

  window.Worker = FrameWorker;
})();
