// InfinityHuman Live client: talk to your avatar, or (?view=SESSION) just watch it (OBS Browser Source).
import { decode, encode } from "/client/msgpack.js";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);
const SCHEMA = 1;

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: HTTP ${response.status}`);
  return body;
}

function waitForIce(pc) {
  // aiortc takes the whole offer at once (no trickle): send it when gathering is done.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // use what was gathered so far
  });
}

async function connect(pc, body) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  const answer = await api("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, sdp: pc.localDescription.sdp, type: "offer" }),
  });
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  return answer.session;
}

function showStats(element, s) {
  const ms = (v) => (v === null || v === undefined ? "-" : `${Math.round(v)} ms`);
  element.textContent =
    `fps        ${s.fps.toFixed(1)}\n` +
    `latency    p50 ${ms(s.latency_p50_ms)}  p99 ${ms(s.latency_p99_ms)}\n` +
    `delay      ${ms(s.delay_ms)}\n` +
    `fallbacks  ${s.fallbacks}   degrade ${s.degrade_level}\n` +
    `A/V offset ${ms(s.av_offset_ms)}   ${s.speech ? "speech" : "silence"}`;
}

function channelFor(pc, onMessage) {
  const channel = pc.createDataChannel("control");
  channel.binaryType = "arraybuffer";
  channel.onmessage = (event) => {
    try { onMessage(decode(event.data)); } catch (error) { console.warn("bad message", error); }
  };
  return channel;
}

// ----- viewer: receive only, no controls ----------------------------------------------------------
async function startViewer(session) {
  $("viewer").hidden = false;
  const video = $("view-video");
  const stats = $("view-stats");
  if (params.get("stats") === "1") stats.style.display = "block";
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (event) => { video.srcObject = event.streams[0] || new MediaStream([event.track]); };
  channelFor(pc, (m) => { if (m.type === "stats") showStats(stats, m); });
  pc.onconnectionstatechange = () => {
    document.body.dataset.state = pc.connectionState;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") setTimeout(() => location.reload(), 3000);
  };
  await connect(pc, { role: "viewer", session });
}

// ----- talker --------------------------------------------------------------------------------------
const talker = { pc: null, channel: null, stream: null, avatar: null, muted: false, session: null };

function setStatus(text) { $("status").textContent = text; document.body.dataset.state = text; }
function say(text) { $("message").textContent = text || ""; }

function send(type, fields = {}) {
  if (talker.channel && talker.channel.readyState === "open") talker.channel.send(encode({ v: SCHEMA, type, ...fields }));
}

async function listMicrophones() {
  const select = $("mic");
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.replaceChildren(...devices.map((d, i) => new Option(d.label || `Microphone ${i + 1}`, d.deviceId)));
}

async function start() {
  say("");
  $("start").disabled = true;
  setStatus("connecting");
  try {
    const deviceId = $("mic").value;
    // The page does not play the user's own delayed voice, so nothing to cancel: keep the voice as is.
    talker.stream = await navigator.mediaDevices.getUserMedia({
      audio: { deviceId: deviceId ? { exact: deviceId } : undefined, echoCancellation: false, noiseSuppression: true },
    });
    await listMicrophones();
    const pc = new RTCPeerConnection({ iceServers: [] });
    talker.pc = pc;
    pc.addTransceiver(talker.stream.getAudioTracks()[0], { direction: "sendrecv" });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      if (event.track.kind === "video") $("video").srcObject = new MediaStream([event.track]);
      else talker.audioTrack = event.track;
      applyPlayback();
    };
    talker.channel = channelFor(pc, onMessage);
    pc.onconnectionstatechange = () => {
      setStatus(pc.connectionState);
      if (pc.connectionState === "failed") { say("the connection failed"); whyEnded(talker.session); stop(); }
      else if (pc.connectionState === "disconnected") whyEnded(talker.session, true);
    };
    const text = $("text").value.trim();
    const session = await connect(pc, { role: "talker", avatar: talker.avatar || null, text: text || null });
    talker.session = session;
    const link = new URL(`/?view=${encodeURIComponent(session)}`, location.href);
    if (token) link.searchParams.set("token", token);
    $("viewer-link").value = link.href;
    for (const id of ["stop", "interrupt", "mute", "copy"]) $(id).disabled = false;
  } catch (error) {
    say(error.message);
    stop();
  }
}

// When the media stop, the server may be unable to say why itself (a fleet's worker that died):
// the front knows. A session that still runs is a network hiccup, which ICE may get over.
async function whyEnded(session, stopIfEnded = false) {
  if (!session) return;
  try {
    const state = await api(`/sessions/${encodeURIComponent(session)}`);
    if (state.state !== "ended") return;
    say(`the session ended: ${state.reason}`);
    if (stopIfEnded) stop();
  } catch (error) { /* the front is unreachable too: "the connection failed" says enough */ }
}

function stop() {
  if (talker.pc) talker.pc.close();
  if (talker.stream) talker.stream.getTracks().forEach((t) => t.stop());
  Object.assign(talker, { pc: null, channel: null, stream: null });
  $("video").srcObject = null;
  $("stats").textContent = "";
  $("start").disabled = false;
  for (const id of ["stop", "interrupt", "mute", "copy"]) $(id).disabled = true;
  setStatus("idle");
}

function onMessage(m) {
  if (m.type === "stats") showStats($("stats"), m);
  else if (m.type === "error") say(m.message);
}

function applyPlayback() {
  const video = $("video");
  const tracks = [video.srcObject?.getVideoTracks()[0]].filter(Boolean);
  if ($("playback").checked && talker.audioTrack) tracks.push(talker.audioTrack);
  if (tracks.length) video.srcObject = new MediaStream(tracks);
  video.muted = !$("playback").checked;
}

async function showAvatar(id) {
  // Thumbnails come through fetch (the token rides in a header), shown from a blob.
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(`/avatars/${encodeURIComponent(id)}`, { headers });
  if (!response.ok) return;
  $("preview").src = URL.createObjectURL(await response.blob());
  $("preview").hidden = false;
}

function chooseAvatar(id) {
  talker.avatar = id;
  send("set_avatar", { avatar: id });
  showAvatar(id).catch(() => {});
}

async function listAvatars(selected) {
  const { avatars } = await api("/avatars");
  const pick = $("avatar-pick");
  pick.replaceChildren(
    new Option("default", ""),
    ...avatars.map((a, i) => new Option(a.demo ? `demo ${i + 1}` : `uploaded ${a.id.slice(0, 6)}`, a.id)),
  );
  pick.value = selected || "";
}

async function uploadAvatar(file) {
  if (!file) return;
  try {
    const avatar = await api("/avatars", { method: "POST", headers: { "Content-Type": file.type }, body: file });
    await listAvatars(avatar.id);
    chooseAvatar(avatar.id);
    say("");
  } catch (error) {
    say(error.message);
  }
}

function startTalker() {
  $("talker").hidden = false;
  $("start").onclick = start;
  $("stop").onclick = stop;
  $("interrupt").onclick = () => send("interrupt");
  $("mute").onclick = () => {
    talker.muted = !talker.muted;
    $("mute").setAttribute("aria-pressed", String(talker.muted));
    $("mute").textContent = talker.muted ? "Unmute" : "Mute";
    send("mute", { muted: talker.muted });
  };
  $("avatar").onchange = (event) => uploadAvatar(event.target.files[0]);
  $("avatar-pick").onchange = (event) => (event.target.value ? chooseAvatar(event.target.value) : null);
  listAvatars().catch((error) => say(error.message));
  $("text").onchange = () => send("set_text", { text: $("text").value.trim() });
  $("playback").onchange = applyPlayback;
  $("copy").onclick = () => navigator.clipboard?.writeText($("viewer-link").value);
  listMicrophones().catch(() => {});
}

const view = params.get("view");
if (view) startViewer(view).catch((error) => { document.body.dataset.error = error.message; console.error(error); });
else startTalker();
