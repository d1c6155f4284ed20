// kongtask dashboard: refreshes the live part of a page (#live) in place, every data-refresh
// seconds, while the tab is visible and no field in it is being edited. No reload, no library.
"use strict";
(() => {
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  const every = Math.max(1, Number(live.dataset.refresh)) * 1000;

  async function refresh() {
    const focused = document.activeElement;
    const editing = focused && live.contains(focused) && focused.matches("input, select, textarea");
    if (!document.hidden && !editing) {
      try {
        const response = await fetch(window.location.href, {
          headers: { "X-Kongtask-Refresh": "1" }, credentials: "same-origin", cache: "no-store",
        });
        // 404: the job this page shows is gone (it completed); say so in place.
        if (response.ok || response.status === 404) {
          live.innerHTML = await response.text();
          live.dataset.refreshed = String(Date.now());
        }
      } catch (error) {
        // The dashboard is restarting or the network is away: the next tick tries again.
      }
    }
    window.setTimeout(refresh, every);
  }

  window.setTimeout(refresh, every);
})();
