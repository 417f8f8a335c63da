/* hubproxy web UI: plain JavaScript, no build step, no external resources.
 * Every URL shown is built from window.location, so the page is right for
 * whatever host (and scheme) the browser reached this proxy through.
 * Untrusted text (search results, errors) is only ever set with textContent.
 */
"use strict";

(function () {
  var ORIGIN = window.location.origin;
  var HOST = window.location.host;

  // Hosts the file proxy accepts (hubproxy/files/urls.py).
  var PROXY_HOSTS = [
    "github.com", "raw.githubusercontent.com", "raw.github.com", "gist.github.com",
    "gist.githubusercontent.com", "api.github.com", "codeload.github.com",
    "media.githubusercontent.com", "objects.githubusercontent.com",
    "release-assets.githubusercontent.com", "github-releases.githubusercontent.com",
    "huggingface.co", "hf.co", "cdn-lfs.hf.co", "cdn-lfs-us-1.hf.co", "cdn-lfs-eu-1.hf.co",
    "cdn-lfs.huggingface.co", "cdn-lfs-us-1.huggingface.co", "cdn-lfs-eu-1.huggingface.co",
    "cas-bridge.xethub.hf.co", "github.githubassets.com", "avatars.githubusercontent.com"
  ];

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function show(node, text) {
    if (!node) return;
    if (text === undefined || text === null || text === "") { node.hidden = true; node.textContent = ""; }
    else { node.hidden = false; node.textContent = text; }
  }

  function toast(text) {
    var t = $("toast");
    if (!t) return;
    show(t, text);
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { show(t, ""); }, 1800);
  }

  // Copy that also works on plain-http origins, where navigator.clipboard
  // does not exist: a hidden textarea and execCommand("copy").
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.top = "-1000px";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    area.setSelectionRange(0, text.length);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  function copyText(text) {
    window.__lastCopied = text; // for tests and debugging
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return fallbackCopy(text); });
    }
    return Promise.resolve(fallbackCopy(text));
  }

  function copyButton(text, label) {
    var b = el("button", { type: "button", className: "small", text: label || "Copy" });
    b.addEventListener("click", function () {
      copyText(text).then(function (ok) { toast(ok ? "Copied" : "Press Ctrl+C to copy"); });
    });
    return b;
  }

  function errorMessage(body, status) {
    if (body && typeof body === "object") {
      var msg = body.error || body.message || "";
      if (body.detail && body.detail.platforms) msg += "";
      if (msg) return msg;
    }
    return "request failed (HTTP " + status + ")";
  }

  function getJSON(url) {
    return fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" }).then(function (r) {
      return r.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!r.ok) throw new Error(errorMessage(body, r.status));
        return body;
      });
    });
  }

  // ---------------------------------------------------------------- home

  function convertLink(text) {
    var t = (text || "").trim();
    if (!t) throw new Error("Paste a link first.");
    if (t.indexOf(ORIGIN + "/") === 0) throw new Error("That is already a link of this proxy.");
    if (!/^https?:\/\//i.test(t)) t = "https://" + t.replace(/^\/+/, "");
    var url;
    try { url = new URL(t); } catch (e) { throw new Error("That is not a valid URL."); }
    var host = url.hostname.toLowerCase();
    if (PROXY_HOSTS.indexOf(host) < 0) {
      throw new Error(host + " is not proxied here: use a GitHub or Hugging Face link.");
    }
    return ORIGIN + "/" + t;
  }

  function initHome() {
    var form = $("convert-form"), input = $("convert-input");
    var current = "";
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      try {
        current = convertLink(input.value);
      } catch (e) {
        show($("convert-error"), e.message);
        $("convert-result").hidden = true;
        return;
      }
      show($("convert-error"), "");
      var link = $("convert-link");
      link.textContent = current;
      link.href = current;
      $("convert-open").href = current;
      $("convert-result").hidden = false;
    });
    $("convert-copy").addEventListener("click", function () {
      if (current) copyText(current).then(function (ok) { toast(ok ? "Copied" : "Press Ctrl+C to copy"); });
    });
    var insecure = window.location.protocol === "http:";
    var templates = {
      docker: "docker pull " + HOST + "/nginx\n" +
        "docker pull " + HOST + "/user/app:tag\n" +
        "docker pull " + HOST + "/ghcr.io/owner/app:tag",
      daemon: JSON.stringify(insecure ? { "registry-mirrors": [ORIGIN], "insecure-registries": [HOST] } : { "registry-mirrors": [ORIGIN] }, null, 2),
      containerd: 'server = "https://registry-1.docker.io"\n\n[host."' + ORIGIN + '"]\n  capabilities = ["pull", "resolve"]' +
        (insecure ? "\n  skip_verify = true" : ""),
      git: "git clone " + ORIGIN + "/https://github.com/owner/repo.git\n" +
        "curl -LO " + ORIGIN + "/https://github.com/owner/repo/releases/download/v1.0/app.tar.gz\n" +
        "HF_ENDPOINT=" + ORIGIN + "/https://huggingface.co huggingface-cli download org/model"
    };
    Array.prototype.forEach.call(document.querySelectorAll("[data-template]"), function (node) {
      node.textContent = templates[node.getAttribute("data-template")] || "";
    });
  }

  // ---------------------------------------------------------------- images

  function normalisePlatform(p) {
    var parts = (p || "").toLowerCase().split("/");
    if (parts[1] === "arm64" && !parts[2]) parts[2] = "v8";
    if (parts[1] === "arm" && !parts[2]) parts[2] = "v7";
    return parts.filter(Boolean).join("/");
  }

  function startDownload(url) {
    var a = el("a", { href: url, download: "" });
    a.style.display = "none";
    document.body.appendChild(a);
    a.click();
    document.body.removeChild(a);
  }

  function initImages() {
    var status = $("images-status"), error = $("images-error");
    var busy = false;

    function run(images) {
      if (busy) return;
      var platform = ($("platform").value || "").trim();
      images = images.map(function (s) { return s.trim(); }).filter(function (s) { return s && s.charAt(0) !== "#"; });
      if (!images.length) { show(error, "Enter at least one image."); return; }
      busy = true;
      show(error, "");
      show(status, "Checking " + images.length + " image(s)…");
      // Pre-flight: every image exists and has the platform, so errors
      // show here instead of in a downloaded file.
      var checks = images.map(function (image) {
        return getJSON("/api/image/info?image=" + encodeURIComponent(image)).then(function (info) {
          var data = (info && info.data) || {};
          var have = (data.platforms || []);
          if (platform && have.length && data.multiArch) {
            var want = normalisePlatform(platform);
            var found = have.some(function (p) { return normalisePlatform(p) === want; });
            if (!found) throw new Error(image + " has no " + platform + " image; available: " + have.join(", "));
          }
          return data;
        }, function (e) { throw new Error(image + ": " + e.message); });
      });
      Promise.all(checks).then(function () {
        var url = "/download?images=" + encodeURIComponent(images.join(","));
        if (platform) url += "&platform=" + encodeURIComponent(platform);
        show(status, "Download started: " + images.join(", ") + (platform ? " (" + platform + ")" : ""));
        startDownload(url);
      }, function (e) {
        show(status, "");
        show(error, e.message);
      }).then(function () { busy = false; });
    }

    $("single-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      run([$("single-image").value]);
    });
    $("batch-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      run($("batch-images").value.split(/\r?\n/));
    });
  }

  // ---------------------------------------------------------------- search

  function humanSize(n) {
    if (!n) return "";
    var units = ["B", "KB", "MB", "GB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function pullName(ns, name) {
    return ns === "library" ? name : ns + "/" + name;
  }

  function initSearch() {
    var params = new URLSearchParams(window.location.search);
    var state = { q: "", page: 1, repo: null, tagPage: 1, tags: [] };
    var PAGE_SIZE = 25;

    function search(q, page, push) {
      state.q = q; state.page = page;
      if (push) history.pushState(null, "", "/search?q=" + encodeURIComponent(q) + (page > 1 ? "&page=" + page : ""));
      show($("search-error"), "");
      $("tags-card").hidden = true;
      $("results-title").textContent = "Searching…";
      $("results-card").hidden = false;
      var list = $("results");
      list.textContent = "";
      getJSON("/api/search?q=" + encodeURIComponent(q) + "&page=" + page + "&page_size=" + PAGE_SIZE).then(function (data) {
        var results = (data && data.results) || [];
        results.sort(function (a, b) {
          if (a.is_official !== b.is_official) return a.is_official ? -1 : 1;
          return (b.pull_count || 0) - (a.pull_count || 0);
        });
        $("results-title").textContent = results.length ? (data.count + " result(s) for “" + q + "”") : ("No results for “" + q + "”");
        results.forEach(function (r) {
          var ns = r.namespace || "library";
          var name = (r.repo_name || "").split("/").pop();
          var full = pullName(ns, name);
          var title = el("button", { type: "button", className: "name", text: full });
          title.addEventListener("click", function () { openTags(ns, name, 1); });
          var li = el("li", { "data-repo": full }, [
            title,
            r.is_official ? el("span", { className: "badge official", text: "official" }) : null,
            el("div", { className: "meta", text: "★ " + (r.star_count || 0) + " · " + (r.pull_count || 0).toLocaleString() + " pulls" }),
            el("div", { text: r.short_description || "" }),
            el("div", { className: "pull" }, [el("code", { text: "docker pull " + HOST + "/" + full }), copyButton("docker pull " + HOST + "/" + full)])
          ]);
          list.appendChild(li);
        });
        var pages = Math.max(1, Math.ceil((data.count || 0) / PAGE_SIZE));
        $("results-page").textContent = "page " + page + " of " + pages;
        $("results-prev").disabled = page <= 1;
        $("results-next").disabled = page >= pages;
      }, function (e) {
        $("results-card").hidden = true;
        show($("search-error"), e.message);
      });
    }

    function renderTags() {
      var filter = ($("tags-filter").value || "").trim().toLowerCase();
      var list = $("tags");
      list.textContent = "";
      var repo = state.repo;
      var tags = state.tags.filter(function (t) { return !filter || (t.name || "").toLowerCase().indexOf(filter) >= 0; });
      tags.sort(function (a, b) {
        function rank(t) { var n = (t.name || "").toLowerCase(); return n === filter ? 0 : n.indexOf(filter) === 0 ? 1 : 2; }
        return filter ? rank(a) - rank(b) : 0;
      });
      tags.forEach(function (t) {
        var line = "docker pull " + HOST + "/" + repo + ":" + t.name;
        var platforms = (t.images || []).filter(function (i) { return i.os && i.os !== "unknown"; }).map(function (i) {
          return [i.os, i.architecture, i.variant].filter(Boolean).join("/");
        });
        var meta = [humanSize(t.full_size), t.last_updated ? ("updated " + String(t.last_updated).slice(0, 10)) : ""].filter(Boolean).join(" · ");
        var li = el("li", { "data-tag": t.name }, [
          el("strong", { text: t.name }),
          el("span", { className: "meta", text: meta ? "  " + meta : "" }),
          el("div", {}, platforms.map(function (p) { return el("span", { className: "badge", text: p }); })),
          el("div", { className: "pull" }, [el("code", { text: line }), copyButton(line)])
        ]);
        list.appendChild(li);
      });
      if (!tags.length) list.appendChild(el("li", { className: "meta", text: "No tags on this page." }));
    }

    function openTags(ns, name, page) {
      state.repo = pullName(ns, name); state.tagPage = page;
      state.ns = ns; state.name = name;
      $("results-card").hidden = true;
      $("tags-card").hidden = false;
      $("tags-title").textContent = "Tags of " + state.repo;
      $("tags-pull").textContent = "docker pull " + HOST + "/" + state.repo;
      $("tags").textContent = "";
      $("tags-filter").value = "";
      getJSON("/api/tags/" + encodeURIComponent(ns) + "/" + encodeURIComponent(name) + "?page=" + page + "&page_size=100").then(function (data) {
        state.tags = (data && data.tags) || [];
        renderTags();
        $("tags-page").textContent = "page " + page;
        $("tags-prev").disabled = page <= 1;
        $("tags-next").disabled = !(data && data.has_more);
      }, function (e) {
        show($("search-error"), e.message);
      });
    }

    $("search-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var q = $("search-input").value.trim();
      if (q) search(q, 1, true);
    });
    $("results-prev").addEventListener("click", function () { search(state.q, state.page - 1, true); });
    $("results-next").addEventListener("click", function () { search(state.q, state.page + 1, true); });
    $("tags-prev").addEventListener("click", function () { openTags(state.ns, state.name, state.tagPage - 1); });
    $("tags-next").addEventListener("click", function () { openTags(state.ns, state.name, state.tagPage + 1); });
    $("tags-back").addEventListener("click", function () { $("tags-card").hidden = true; $("results-card").hidden = false; });
    $("tags-filter").addEventListener("input", renderTags);
    window.addEventListener("popstate", function () {
      var p = new URLSearchParams(window.location.search);
      if (p.get("q")) { $("search-input").value = p.get("q"); search(p.get("q"), parseInt(p.get("page") || "1", 10) || 1, false); }
    });
    var q = params.get("q");
    if (q) {
      $("search-input").value = q;
      search(q, parseInt(params.get("page") || "1", 10) || 1, false);
    }
  }

  window.hubproxy = { convertLink: convertLink, copyText: copyText, normalisePlatform: normalisePlatform };

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "home") initHome();
    else if (page === "images") initImages();
    else if (page === "search") initSearch();
  });
})();
