// A small SIP-over-WebSocket user agent (RFC 7118) for the interop tests, written the way JsSIP
// writes SIP (Via host and Contact host a random ".invalid" name, RFC 7118 §5), with the
// browser's own WebRTC stack for media: RTCPeerConnection's offer or answer goes in the SDP
// as it is, non-trickle (we wait for ICE gathering to complete, as JsSIP does by default).
//
// The query string says what to do:
//   ws        WebSocket URL of the gateway (ws://127.0.0.1:PORT/)
//   domain    SIP domain to register at (127.0.0.1:PORT)
//   user, password   the account
//   mode      "call": call `target`, hang up once media flowed; "answer": answer the first
//             INVITE (with an offer, or without: then ours is in the 200 and the answer in
//             the ACK), wait for the caller's BYE (or hang up with hangup=self); "pickup":
//             watch `watch`'s calls (RFC 4235 dialog package) and pick up the first that rings
//             (an INVITE with Replaces, RFC 3891, built from the NOTIFY as BLF phones do),
//             then wait for the caller's BYE
//   target    user part to call (mode=call)
//   watch     the account whose ringing call to pick up (mode=pickup)
//   packets   RTP packets that must have been received and sent before "media" is reported
//   reoffer   "1" (mode=call): wait until a re-INVITE from the gateway was answered (a blind
//             transfer by the callee: the new party's offer) before counting `packets`
//   hold      "1" (mode=call): once media flowed, hold (re-INVITE a=sendonly) until `packets`
//             more were sent, resume (a=sendrecv) until `packets` more flowed each way, then BYE
//
// Every step is POSTed to /report as JSON {kind, ...}, in order; the test reads them there.
// Digest authentication uses SHA-256 (RFC 8760; WebCrypto has no MD5).
"use strict";

const params = new URLSearchParams(location.search);
const config = {
  ws: params.get("ws"),
  domain: params.get("domain"),
  user: params.get("user"),
  password: params.get("password"),
  mode: params.get("mode") || "call",
  target: params.get("target"),
  watch: params.get("watch"),
  packets: Number(params.get("packets") || "50"),
  hangup: params.get("hangup") || (params.get("mode") === "call" ? "self" : "remote"),
  hold: params.get("hold") === "1",
  reoffer: params.get("reoffer") === "1",
};

// -- reporting ------------------------------------------------------------------------------

let reports = Promise.resolve();
let reportNumber = 0;

function report(kind, data = {}) {
  const body = JSON.stringify({ kind, n: reportNumber++, t: performance.now(), ...data });
  document.getElementById("log").textContent += body + "\n";
  // Chained, so that the test sees reports in the order they were made.
  reports = reports.then(() =>
    fetch("/report", { method: "POST", headers: { "Content-Type": "application/json" }, body })
      .catch(() => {}));
  return reports;
}

window.addEventListener("error", (event) => report("error", { message: String(event.message) }));
window.addEventListener("unhandledrejection", (event) =>
  report("error", { message: String(event.reason && event.reason.stack || event.reason) }));

// -- SIP messages ---------------------------------------------------------------------------

function randomToken(bytes = 8) {
  const data = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

const COMPACT = { v: "via", f: "from", t: "to", i: "call-id", m: "contact", l: "content-length",
                  c: "content-type" };

function parseSip(text) {
  const split = text.indexOf("\r\n\r\n");
  const head = split < 0 ? text : text.slice(0, split);
  const body = split < 0 ? "" : text.slice(split + 4);
  const lines = head.split("\r\n");
  const headers = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    let name = line.slice(0, colon).trim().toLowerCase();
    name = COMPACT[name] || name;
    headers.push([name, line.slice(colon + 1).trim()]);
  }
  const first = lines[0];
  const status = first.startsWith("SIP/2.0 ") ? Number(first.split(" ")[1]) : null;
  const message = {
    first, status, body, headers,
    method: status === null ? first.split(" ")[0] : null,
    all: (name) => headers.filter(([key]) => key === name).map(([, value]) => value),
    get: (name) => message.all(name)[0] || "",
  };
  message.cseq = message.get("cseq").split(/\s+/);
  return message;
}

function tagOf(value) {
  const match = /;\s*tag=([^;\s>]+)/.exec(value);
  return match ? match[1] : null;
}

function uriOf(value) {
  const match = /<([^>]+)>/.exec(value);
  return match ? match[1] : value.split(";")[0].trim();
}

class SipSocket {
  constructor(url) {
    this.host = randomToken(6) + ".invalid";
    this.transport = url.startsWith("wss:") ? "WSS" : "WS";
    this.waiting = new Map(); // "Call-ID CSeq-number CSeq-method" -> {resolve, provisional}
    this.onrequest = null;
    this.socket = new WebSocket(url, "sip");
  }

  open() {
    return new Promise((resolve, reject) => {
      this.socket.onopen = () => resolve();
      this.socket.onerror = () => reject(new Error("WebSocket error"));
      this.socket.onclose = (event) => report("ws-closed", { code: event.code });
      this.socket.onmessage = (event) => this.received(String(event.data));
    });
  }

  received(text) {
    const message = parseSip(text);
    if (message.status === null) {
      report("sip-request", { method: message.method });
      if (this.onrequest) this.onrequest(message);
      return;
    }
    report("sip-response", { status: message.status, method: message.cseq[1] });
    const key = `${message.get("call-id")} ${message.cseq[0]} ${message.cseq[1]}`;
    const waiter = this.waiting.get(key);
    if (!waiter) return; // a retransmitted or stray response
    if (message.status < 200) return;
    this.waiting.delete(key);
    waiter(message);
  }

  send(text) {
    this.socket.send(text);
  }

  via(branch = randomToken()) {
    return `SIP/2.0/${this.transport} ${this.host};branch=z9hG4bK${branch}`;
  }

  contact(user) {
    return `<sip:${user}@${this.host};transport=${this.transport.toLowerCase()}>`;
  }

  // A request's text. `dialog` holds callId, localTag, remoteTag (or null), cseq, routes.
  request(method, uri, { to, from, dialog, cseq, branch, extra = [], body = "" }) {
    const lines = [
      `${method} ${uri} SIP/2.0`,
      `Via: ${this.via(branch)}`,
      "Max-Forwards: 70",
      ...dialog.routes.map((route) => `Route: ${route}`),
      `To: <${to}>` + (dialog.remoteTag ? `;tag=${dialog.remoteTag}` : ""),
      `From: <${from}>;tag=${dialog.localTag}`,
      `Call-ID: ${dialog.callId}`,
      `CSeq: ${cseq} ${method}`,
      ...extra,
      "User-Agent: voipgw-test-softphone",
    ];
    if (body) lines.push("Content-Type: application/sdp");
    lines.push(`Content-Length: ${new TextEncoder().encode(body).length}`);
    return lines.join("\r\n") + "\r\n\r\n" + body;
  }

  // Send a request and wait for its final response (RFC 3261 §17.1: over a reliable
  // transport there are no retransmissions to make).
  transaction(text, callId, cseq, method) {
    return new Promise((resolve) => {
      this.waiting.set(`${callId} ${cseq} ${method}`, resolve);
      this.send(text);
    });
  }

  respond(request, status, reason, { toTag = null, extra = [], body = "" } = {}) {
    let to = request.get("to");
    if (toTag && !tagOf(to)) to += `;tag=${toTag}`;
    const lines = [
      `SIP/2.0 ${status} ${reason}`,
      ...request.all("via").map((via) => `Via: ${via}`),
      ...request.all("record-route").map((route) => `Record-Route: ${route}`),
      `From: ${request.get("from")}`,
      `To: ${to}`,
      `Call-ID: ${request.get("call-id")}`,
      `CSeq: ${request.get("cseq")}`,
      ...extra,
    ];
    if (body) lines.push("Content-Type: application/sdp");
    lines.push(`Content-Length: ${new TextEncoder().encode(body).length}`);
    this.send(lines.join("\r\n") + "\r\n\r\n" + body);
  }
}

// -- digest authentication (RFC 7616, SHA-256 per RFC 8760) ------------------------------------

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function challengeParams(value) {
  const out = {};
  for (const match of value.replace(/^Digest\s+/i, "").matchAll(/(\w+)=("([^"]*)"|[^,\s]+)/g)) {
    out[match[1].toLowerCase()] = match[3] !== undefined ? match[3] : match[2];
  }
  return out;
}

async function authorization(challenges, { method, uri }) {
  // One challenge per algorithm (RFC 8760 §2.3): take the SHA-256 one.
  const chosen = challenges.map(challengeParams)
    .find((c) => (c.algorithm || "MD5").toUpperCase() === "SHA-256");
  if (!chosen) throw new Error("no SHA-256 digest challenge in " + JSON.stringify(challenges));
  const ha1 = await sha256Hex(`${config.user}:${chosen.realm}:${config.password}`);
  const ha2 = await sha256Hex(`${method}:${uri}`);
  const cnonce = randomToken();
  const nc = "00000001";
  const qop = chosen.qop ? "auth" : null;
  const response = qop
    ? await sha256Hex(`${ha1}:${chosen.nonce}:${nc}:${cnonce}:${qop}:${ha2}`)
    : await sha256Hex(`${ha1}:${chosen.nonce}:${ha2}`);
  let value = `Digest username="${config.user}", realm="${chosen.realm}", ` +
    `nonce="${chosen.nonce}", uri="${uri}", response="${response}", algorithm=SHA-256`;
  if (qop) value += `, qop=${qop}, nc=${nc}, cnonce="${cnonce}"`;
  if (chosen.opaque !== undefined) value += `, opaque="${chosen.opaque}"`;
  return value;
}

// -- media ----------------------------------------------------------------------------------

function newPeerConnection() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const states = () => ({
    ice: pc.iceConnectionState, connection: pc.connectionState, signaling: pc.signalingState,
  });
  pc.oniceconnectionstatechange = () => report("pc-state", states());
  pc.onconnectionstatechange = () => report("pc-state", states());
  return pc;
}

async function addMicrophone(pc) {
  // Chromium's fake device (--use-fake-device-for-media-stream): a beep every second.
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
}

function gatheringComplete(pc) {
  // Non-trickle: the SDP we send must hold every candidate (RFC 8839 §4.1).
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

async function rtpStats(pc) {
  const out = { inbound: 0, outbound: 0, inboundBytes: 0, codec: null, dtls: null, srtp: null };
  const stats = await pc.getStats();
  stats.forEach((entry) => {
    if (entry.type === "inbound-rtp" && entry.kind === "audio") {
      out.inbound += entry.packetsReceived || 0;
      out.inboundBytes += entry.bytesReceived || 0;
      const codec = entry.codecId && stats.get(entry.codecId);
      if (codec) out.codec = codec.mimeType;
    } else if (entry.type === "outbound-rtp" && entry.kind === "audio") {
      out.outbound += entry.packetsSent || 0;
    } else if (entry.type === "transport") {
      out.dtls = entry.dtlsState;
      out.srtp = entry.srtpCipher || null;
      out.tls = entry.tlsVersion || null;
      out.role = entry.dtlsRole || null;
    }
  });
  return out;
}

// What the tests check of a call's media: rtpStats() with the ICE and connection states. Both
// "media" and "media-at-bye" are this, so a test may take either.
async function mediaState(pc) {
  return { ...(await rtpStats(pc)), ice: pc.iceConnectionState, connection: pc.connectionState };
}

async function waitForMedia(pc, { inbound = config.packets, outbound = config.packets } = {}) {
  // Poll until the packet counts reach `inbound` and `outbound` (by default `packets` each
  // way), then report them as "media" and return true; the test's own deadline ends us. When
  // the other side's BYE closed `pc` first (its handler reported "media-at-bye", the counts at
  // the BYE), return false: a loaded machine may run the BYE before the next poll.
  for (;;) {
    if (pc.signalingState === "closed") return false;
    let stats;
    try {
      stats = await mediaState(pc);
    } catch (error) {
      if (pc.signalingState === "closed") return false; // closed while getStats() ran
      throw error;
    }
    if (stats.inbound >= inbound && stats.outbound >= outbound) {
      report("media", stats);
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// -- the user agent -------------------------------------------------------------------------

const aor = () => `sip:${config.user}@${config.domain}`;

async function register(sip) {
  const uri = `sip:${config.domain}`;
  const dialog = { callId: randomToken(), localTag: randomToken(4), remoteTag: null, routes: [] };
  const extra = [`Contact: ${sip.contact(config.user)};expires=300`, "Expires: 300"];
  let cseq = 1;
  let response = await sip.transaction(
    sip.request("REGISTER", uri, { to: aor(), from: aor(), dialog, cseq, extra }),
    dialog.callId, cseq, "REGISTER");
  if (response.status === 401) {
    const auth = await authorization(response.all("www-authenticate"),
                                     { method: "REGISTER", uri });
    cseq += 1;
    response = await sip.transaction(
      sip.request("REGISTER", uri, {
        to: aor(), from: aor(), dialog, cseq, extra: [...extra, `Authorization: ${auth}`],
      }),
      dialog.callId, cseq, "REGISTER");
  }
  report("registered", { status: response.status });
  if (response.status !== 200) throw new Error(`REGISTER: ${response.first}`);
}

// Send a request outside a dialog (SUBSCRIBE, INVITE) and return its final response: after a
// 401 or 407, once more with credentials (RFC 3261 §22.2). `build(cseq, branch, auth)` makes
// the request's text; an INVITE's non-2xx is ACKed in its own transaction (§17.1.1.3).
async function authenticated(sip, method, uri, dialog, build) {
  let cseq = 1;
  let branch = randomToken();
  let response = await sip.transaction(build(cseq, branch, []), dialog.callId, cseq, method);
  if (response.status === 407 || response.status === 401) {
    if (method === "INVITE") {
      sip.send(sip.request("ACK", uri, {
        to: uri, from: aor(), cseq, branch,
        dialog: { ...dialog, remoteTag: tagOf(response.get("to")) },
      }));
    }
    const header = response.status === 407 ? "proxy-authenticate" : "www-authenticate";
    const auth = await authorization(response.all(header), { method, uri });
    const name = response.status === 407 ? "Proxy-Authorization" : "Authorization";
    cseq += 1;
    branch = randomToken();
    response = await sip.transaction(
      build(cseq, branch, [`${name}: ${auth}`]), dialog.callId, cseq, method);
  }
  return { response, cseq };
}

// Requests in the call's dialog once it is up: the other side's BYE (hangup=remote), and a
// re-INVITE with an offer (RFC 3264 §8), which the same RTCPeerConnection answers.
let activeCall = null;
let reinviteAnswered = null; // resolves when a re-INVITE got our 200
const reinviteDone = new Promise((resolve) => { reinviteAnswered = resolve; });

async function answerReinvite(sip, pc, request) {
  sip.respond(request, 100, "Trying");
  report("reinvite-offer", { sdp: request.body });
  if (!request.body) {
    sip.respond(request, 488, "Not Acceptable Here");
    throw new Error("a re-INVITE without an offer: this page takes none");
  }
  await pc.setRemoteDescription({ type: "offer", sdp: request.body });
  await pc.setLocalDescription(await pc.createAnswer());
  const sdp = pc.localDescription.sdp;
  report("reinvite-answer", { sdp });
  sip.respond(request, 200, "OK", { extra: [`Contact: ${sip.contact(config.user)}`], body: sdp });
  reinviteAnswered();
}

function inDialog(sip, request) {
  if (request.method === "INVITE" && activeCall !== null) {
    answerReinvite(sip, activeCall, request).catch((error) =>
      report("error", { message: String(error && error.stack || error) }));
  } else if (request.method === "BYE" && activeCall !== null) {
    sip.respond(request, 200, "OK");
    const pc = activeCall;
    activeCall = null;
    mediaState(pc)
      .then((stats) => report("media-at-bye", stats))
      .then(() => {
        pc.close();
        report("bye-received");
      });
  } else if (request.method === "ACK") {
    // nothing to do
  } else {
    sip.respond(request, 501, "Not Implemented", { toTag: randomToken(4) });
  }
}

async function call(sip, { target = `sip:${config.target}@${config.domain}`, extra = [] } = {}) {
  const pc = newPeerConnection();
  await addMicrophone(pc);
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc);
  const offer = pc.localDescription.sdp;
  report("offer", { sdp: offer });

  const dialog = { callId: randomToken(), localTag: randomToken(4), remoteTag: null, routes: [] };
  const contact = `Contact: ${sip.contact(config.user)}`;
  const invite = (cseq, branch, auth) => sip.request("INVITE", target, {
    to: target, from: aor(), dialog, cseq, branch, extra: [contact, ...extra, ...auth], body: offer,
  });
  const sent = await authenticated(sip, "INVITE", target, dialog, invite);
  const response = sent.response;
  let cseq = sent.cseq;
  report("invite-final", { status: response.status, sdp: response.body });
  if (response.status !== 200) throw new Error(`INVITE: ${response.first}`);

  // The dialog (RFC 3261 §12.1.2): remote tag, remote target, route set from Record-Route.
  dialog.remoteTag = tagOf(response.get("to"));
  dialog.routes = response.all("record-route").reverse();
  const remoteTarget = uriOf(response.get("contact")) || target;
  await pc.setRemoteDescription({ type: "answer", sdp: response.body });
  report("answer-applied");
  // RFC 3261 §13.2.2.4: the 2xx's ACK is a new transaction with the INVITE's CSeq number.
  sip.send(sip.request("ACK", remoteTarget, { to: target, from: aor(), dialog, cseq }));
  activeCall = pc; // re-INVITEs, and a BYE with hangup=remote, come to inDialog()
  if (sip.onrequest === null) sip.onrequest = (request) => inDialog(sip, request);

  if (config.reoffer) {
    await reinviteDone;
    const before = await rtpStats(pc);
    await waitForMedia(pc, { outbound: before.outbound + config.packets });
  } else if (!(await waitForMedia(pc))) {
    return; // the other side hung up first: inDialog() reported the counts at its BYE
  }
  if (config.hangup === "remote") return;
  if (config.hold) {
    // Hold and resume (RFC 3264 §8.4) as a browser softphone does them: the transceiver's
    // direction, then a new offer from the same RTCPeerConnection in a re-INVITE.
    const reinvite = async (direction) => {
      pc.getTransceivers()[0].direction = direction;
      await pc.setLocalDescription(await pc.createOffer());
      cseq += 1;
      const reoffer = pc.localDescription.sdp;
      const response = await sip.transaction(
        sip.request("INVITE", remoteTarget, {
          to: target, from: aor(), dialog, cseq, extra: [contact], body: reoffer,
        }),
        dialog.callId, cseq, "INVITE");
      report("reinvite-final", { direction, status: response.status, sdp: response.body });
      if (response.status !== 200) throw new Error(`re-INVITE: ${response.first}`);
      await pc.setRemoteDescription({ type: "answer", sdp: response.body });
      sip.send(sip.request("ACK", remoteTarget, { to: target, from: aor(), dialog, cseq }));
    };
    await reinvite("sendonly");
    const held = await rtpStats(pc);
    // Held, Chrome sends and receives nothing (its inbound-rtp statistics are gone).
    await waitForMedia(pc, { inbound: 0, outbound: held.outbound + config.packets });
    await reinvite("sendrecv");
    const resumed = await rtpStats(pc);
    await waitForMedia(pc, {
      inbound: resumed.inbound + config.packets, outbound: resumed.outbound + config.packets,
    });
  }
  activeCall = null;
  cseq += 1;
  const bye = await sip.transaction(
    sip.request("BYE", remoteTarget, { to: target, from: aor(), dialog, cseq }),
    dialog.callId, cseq, "BYE");
  report("bye-final", { status: bye.status });
  pc.close();
}

function answer(sip) {
  // Answer the first INVITE; requests in its dialog after that (ACK, BYE) are handled here too.
  let pc = null;
  let ended = false;
  let ackArrived = null; // resolves with the ACK of our 200
  const toTag = randomToken(4);
  const contact = `Contact: ${sip.contact(config.user)}`;
  sip.onrequest = async (request) => {
    if (request.method === "INVITE" && pc === null) {
      sip.respond(request, 100, "Trying");
      // An INVITE without SDP (a blind transfer's to us, RFC 3261 §13.2.1): our offer goes in
      // the 200 and the answer comes in the ACK.
      const lateOffer = !request.body;
      report(lateOffer ? "invite-without-offer" : "offer", { sdp: request.body });
      pc = newPeerConnection();
      try {
        if (lateOffer) {
          await addMicrophone(pc);
          await pc.setLocalDescription(await pc.createOffer());
        } else {
          await pc.setRemoteDescription({ type: "offer", sdp: request.body });
          await addMicrophone(pc);
          await pc.setLocalDescription(await pc.createAnswer());
        }
        await gatheringComplete(pc);
      } catch (error) {
        report("error", { message: `answering: ${error}` });
        sip.respond(request, 488, "Not Acceptable Here", { toTag });
        return;
      }
      sip.respond(request, 180, "Ringing", { toTag, extra: [contact] });
      const sdp = pc.localDescription.sdp;
      report(lateOffer ? "offer-in-200" : "answer", { sdp });
      const acked = new Promise((resolve) => { ackArrived = resolve; });
      sip.respond(request, 200, "OK", { toTag, extra: [contact], body: sdp });
      if (lateOffer) {
        const ack = await acked;
        report("answer-in-ack", { sdp: ack.body });
        await pc.setRemoteDescription({ type: "answer", sdp: ack.body });
      }
      await waitForMedia(pc);
      if (config.hangup === "self" && !ended) {
        const dialog = {
          callId: request.get("call-id"), localTag: toTag, remoteTag: tagOf(request.get("from")),
          routes: request.all("record-route"),
        };
        const remote = uriOf(request.get("from"));
        const bye = await sip.transaction(
          sip.request("BYE", uriOf(request.get("contact")), {
            to: remote, from: uriOf(request.get("to")), dialog, cseq: 1,
          }),
          dialog.callId, 1, "BYE");
        ended = true;
        report("bye-final", { status: bye.status });
        pc.close();
      }
    } else if (request.method === "ACK") {
      // The 200 was sent once over a reliable transport: nothing to stop; a late offer's
      // answer is in it.
      if (ackArrived !== null) ackArrived(request);
      ackArrived = null;
    } else if (request.method === "BYE") {
      sip.respond(request, 200, "OK");
      if (!ended && pc !== null) {
        ended = true;
        // A test takes these figures when the BYE came before waitForMedia's next poll could
        // report them.
        report("media-at-bye", await mediaState(pc));
        pc.close();
      }
      report("bye-received");
    } else if (request.method === "OPTIONS") {
      sip.respond(request, 200, "OK", { toTag });
    } else {
      sip.respond(request, 501, "Not Implemented", { toTag });
    }
  };
}

// Pick up `watch`'s first ringing call: SUBSCRIBE to its dialog events (RFC 4235); the
// gateway's NOTIFY of an early dialog names the ringing phone's dialog with the gateway (call-id,
// local-tag: the phone's, remote-tag: the gateway's, RFC 4235 §4.1), from which the Replaces
// header is built as Yealink and Poly phones build it (RFC 3891 §6.1).
async function pickup(sip) {
  let picking = false;
  sip.onrequest = (request) => {
    if (request.method !== "NOTIFY") {
      inDialog(sip, request);
      return;
    }
    sip.respond(request, 200, "OK");
    const NS = "urn:ietf:params:xml:ns:dialog-info";
    const xml = new DOMParser().parseFromString(request.body, "application/xml");
    for (const dialog of xml.getElementsByTagNameNS(NS, "dialog")) {
      const state = dialog.getElementsByTagNameNS(NS, "state")[0];
      if (picking || !state || state.textContent !== "early" || !dialog.getAttribute("call-id")) {
        continue;
      }
      picking = true;
      const replaces = `${dialog.getAttribute("call-id")};to-tag=` +
        `${dialog.getAttribute("remote-tag")};from-tag=${dialog.getAttribute("local-tag")}` +
        ";early-only";
      report("pickup", { replaces });
      call(sip, { target: watched, extra: [`Replaces: ${replaces}`] }).catch((error) =>
        report("error", { message: String(error && error.stack || error) }));
    }
  };
  const watched = `sip:${config.watch}@${config.domain}`;
  const dialog = { callId: randomToken(), localTag: randomToken(4), remoteTag: null, routes: [] };
  const subscribe = (cseq, branch, auth) => sip.request("SUBSCRIBE", watched, {
    to: watched, from: aor(), dialog, cseq, branch,
    extra: [`Contact: ${sip.contact(config.user)}`, "Event: dialog", "Expires: 600",
            "Accept: application/dialog-info+xml", ...auth],
  });
  const { response } = await authenticated(sip, "SUBSCRIBE", watched, dialog, subscribe);
  report("subscribed", { status: response.status });
  if (response.status !== 200) throw new Error(`SUBSCRIBE: ${response.first}`);
}

async function main() {
  report("start", { userAgent: navigator.userAgent, config: { ...config, password: "-" } });
  const sip = new SipSocket(config.ws);
  await sip.open();
  report("ws-open");
  if (config.mode === "answer") answer(sip);
  await register(sip);
  if (config.mode === "call") await call(sip);
  if (config.mode === "pickup") await pickup(sip);
  report("done");
}

main().catch((error) => report("error", { message: String(error && error.stack || error) }));
