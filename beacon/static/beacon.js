/*! Beacon: pageviews, events, commerce (README). Never throws */
(function (w, d, n, h) { try {
var stub = w.beacon, queue = stub && stub.q || [], batch = [], first = 1, hold, last, ref, i, s = d.currentScript,
 ep = (s.getAttribute("data-endpoint") || new URL(s.src).origin).replace(/\/+$/, ""),
 NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
if (stub && stub.l) return;
if (s.hasAttribute("data-partner") && n.globalPrivacyControl === true) return (w.beacon = function () {}).l = 1;
(w.beacon = function (cmd, e, p) {
 cmd == "event" ? typeof e == "string" && NAME.test(e) && send(e, p) : cmd == "pageview" ? pv()
  : NAME.test(cmd) && e === Object(e) && send(cmd, e, e);
}).l = 1;
// One id: 1st request waits for other frames' 1st (a lock), the rest for its cookie
function post(evs) { try {
 if (hold) return hold.push.apply(hold, evs);
 var f = function () {
  return fetch(ep + "/e", {method: "POST", body: JSON.stringify(evs), credentials: "include", keepalive: 1}).then(go, go)
 };
 first && n.locks ? n.locks.request("beacon.js", f).catch(f) : f();
 hold = first && [], first = 0;
} catch (x) {} }
function go() { var q = hold; hold = 0; q && q.length && post(q) }
function send(e, props, shop) { try {
 var p = {}, c = 0, k, v, t, ev;
 if (props && typeof props == "object") for (k in props) {
  v = props[k]; t = typeof v;
  if (NAME.test(k) && c < 32 && (t == "string" || t == "boolean" || t == "number" && isFinite(v))) p[k] = v, c++;
 }
 ev = {e: e, u: location.href, r: ref, p: p, c: shop};
 batch ? batch.push(ev) : post([ev]);
} catch (x) {} }
function pv() {
 var u = location.href;
 if (u != last) ref = last == null ? d.referrer : last, last = u, send("pageview");
}
pv();
for (i = 0; i < queue.length; i++) w.beacon.apply(w, queue[i]);
while (batch.length) post(batch.splice(0, 25));
batch = 0;
["pushState", "replaceState"].forEach(function (m) {
 var f = h[m];
 h[m] = function () { var r = f.apply(this, arguments); pv(); return r };
});
w.addEventListener("popstate", pv);
} catch (x) {} })(window, document, navigator, history);
