/*! Beacon: pageviews (SPA too), events, commerce (README). Never throws */
(function (w, d, n, h) { try {
var stub = w.beacon, queue = stub && stub.q || [], batch = [], last, ref, i;
if (stub && stub.l) return;
var s = d.currentScript,
 ep = (s.getAttribute("data-endpoint") || new URL(s.src).origin).replace(/\/+$/, ""),
 NAME = /^[A-Za-z0-9_.:-]{1,64}$/, enc = encodeURIComponent,
 off = s.hasAttribute("data-partner") && n.globalPrivacyControl === true;
var api = w.beacon = function (cmd, e, p) { try {
 if (off) return;
 if (cmd == "event") typeof e == "string" && NAME.test(e) && send(e, p);
 else if (cmd == "pageview") pv();
 else if (NAME.test(cmd) && e === Object(e)) send(cmd, e, e);
} catch (x) {} };
api.l = 1;
if (off) return;
function post(evs) {
 var ok;
 try { ok = n.sendBeacon(ep + "/e", JSON.stringify(evs)) } catch (x) {}
 if (!ok) evs.forEach(function (ev) {
  var k, q = "e=" + enc(ev.e) + "&u=" + enc(ev.u) + "&r=" + enc(ev.r);
  for (k in ev.p) q += "&p." + enc(k) + "=" + enc(ev.p[k]);
  for (k in ev.c) if (k != "items") q += "&" + k + "=" + enc(ev.c[k]);
  new Image().src = ep + "/p.gif?" + q;
 });
}
function send(e, props, shop) {
 var p = {}, c = 0, k, v, t, ev;
 if (props && typeof props == "object") for (k in props) {
  v = props[k]; t = typeof v;
  if (NAME.test(k) && c < 32 && (t == "string" || t == "boolean" || t == "number" && isFinite(v))) p[k] = v, c++;
 }
 ev = {e: e, u: location.href, r: ref, p: p, c: shop};
 batch ? batch.push(ev) : post([ev]);
}
function pv() { try {
 var u = location.href;
 if (u != last) ref = last == null ? d.referrer : last, last = u, send("pageview");
} catch (x) {} }
function wrap(m) {
 var f = h[m];
 if (typeof f == "function") h[m] = function () { var res = f.apply(this, arguments); pv(); return res };
}
pv();
for (i = 0; i < queue.length; i++) api.apply(w, queue[i]);
while (batch.length) post(batch.splice(0, 25));
batch = 0;
wrap("pushState"); wrap("replaceState");
w.addEventListener("popstate", pv);
} catch (x) {} })(window, document, navigator, history);
