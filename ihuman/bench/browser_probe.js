// `ihuman bench latency --mode browser`: what the page itself saw, on the page's clock.
// Injected before the page's own scripts. It records
//   - the microphone as captured (its tone marks say when each left the talker),
//   - the received audio (its marks say when each came back),
//   - for every video frame the browser composites (requestVideoFrameCallback), its expected
//     display time and the mean brightness of the 8 x 8 code cells in the frame's corner.
// Audio is kept at 16 kHz mono (every third sample of a 3-sample mean); the harness finds the marks
// and reads the codes, with the same code as the webrtc mode.
(() => {
  const GRID = 8;
  const probe = { mic: [], returned: [], frames: [], started: null, remoteAudio: null, connections: [] };
  window.__benchProbe = probe;

  const tapSource = `
    class BenchTap extends AudioWorkletProcessor {
      process(inputs) {
        const channel = inputs[0] && inputs[0][0];
        if (channel) this.port.postMessage({ time: currentTime, samples: channel.slice(0) });
        return true;
      }
    }
    registerProcessor("bench-tap", BenchTap);`;
  const tapUrl = URL.createObjectURL(new Blob([tapSource], { type: "application/javascript" }));
  let context = null;
  let moduleReady = null;

  function decimate(block) {
    const out = new Float32Array(Math.floor(block.length / 3));
    for (let i = 0; i < out.length; i++) out[i] = (block[3 * i] + block[3 * i + 1] + block[3 * i + 2]) / 3;
    return out;
  }

  async function tap(stream, into) {
    context = context || new AudioContext({ sampleRate: 48000 });
    moduleReady = moduleReady || context.audioWorklet.addModule(tapUrl);
    await moduleReady;
    await context.resume();
    const node = new AudioWorkletNode(context, "bench-tap");
    node.port.onmessage = (event) => {
      // The context clock -> performance.now(), from the context's own pairing of the two.
      const stamp = context.getOutputTimestamp();
      const when = stamp.performanceTime + (event.data.time - stamp.contextTime) * 1000;
      into.push([when, decimate(event.data.samples)]);
    };
    const mute = context.createGain();
    mute.gain.value = 0; // pulled by the graph, heard by nobody
    context.createMediaStreamSource(stream).connect(node).connect(mute).connect(context.destination);
  }

  // The avatar's audio: the page plays it only when asked to (echo), so take it at the connection.
  const NativePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new NativePeerConnection(...args);
    probe.connections.push(pc);
    pc.addEventListener("track", (event) => { if (event.track.kind === "audio") probe.remoteAudio = event.track; });
    return pc;
  };
  window.RTCPeerConnection.prototype = NativePeerConnection.prototype;

  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    if (probe.started === null) probe.started = performance.now();
    if (stream.getAudioTracks().length) tap(stream, probe.mic);
    return stream;
  };

  function watchVideo(video) {
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const onFrame = (now, meta) => {
      const height = video.videoHeight;
      const cell = Math.max(16, Math.floor(height / 40 / 16) * 16); // as transport/stamps.py cell_size
      const side = (GRID + 2) * cell;
      canvas.width = side;
      canvas.height = side;
      g.drawImage(video, 0, 0, side, side, 0, 0, side, side);
      const px = g.getImageData(0, 0, side, side).data;
      const lo = Math.floor(cell / 4), hi = cell - Math.floor(cell / 4);
      const means = [];
      for (let r = 0; r < GRID; r++) {
        for (let c = 0; c < GRID; c++) {
          let sum = 0, n = 0;
          for (let y = (r + 1) * cell + lo; y < (r + 1) * cell + hi; y++) {
            for (let x = (c + 1) * cell + lo; x < (c + 1) * cell + hi; x++) {
              const i = 4 * (y * side + x);
              sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
              n++;
            }
          }
          means.push(sum / n);
        }
      }
      probe.frames.push([meta.expectedDisplayTime, meta.presentedFrames, means]);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  probe.watch = (selector) => {
    watchVideo(document.querySelector(selector));
    if (probe.remoteAudio) {
      const stream = new MediaStream([probe.remoteAudio]);
      // Chromium feeds a remote track to Web Audio only while a media element plays it.
      const sink = new Audio();
      sink.muted = true;
      sink.srcObject = stream;
      sink.play().catch(() => {});
      tap(stream, probe.returned);
    }
  };

  function packed(blocks) {
    const total = blocks.reduce((n, [, s]) => n + s.length, 0);
    const all = new Float32Array(total);
    const starts = [];
    let at = 0;
    for (const [when, samples] of blocks) {
      starts.push([when, at]);
      all.set(samples, at);
      at += samples.length;
    }
    let binary = "";
    const bytes = new Uint8Array(all.buffer);
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { starts, samples: btoa(binary) };
  }

  // What the browser's own WebRTC stack says of the received streams (getStats, inbound-rtp).
  const RECEIVED = ["kind", "packetsReceived", "packetsLost", "framesDecoded", "framesDropped", "freezeCount",
    "totalFreezesDuration", "pliCount", "nackCount", "jitterBufferDelay", "jitterBufferEmittedCount",
    "decoderImplementation", "frameWidth", "frameHeight"];
  async function received() {
    const out = [];
    for (const pc of probe.connections) {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        const entry = Object.fromEntries(RECEIVED.filter((k) => k in s).map((k) => [k, s[k]]));
        const codec = s.codecId && report.get(s.codecId);
        if (codec) entry.codec = codec.mimeType;
        out.push(entry);
      });
    }
    return out;
  }

  probe.collect = async () => ({
    started: probe.started,
    mic: packed(probe.mic),
    returned: packed(probe.returned),
    frames: probe.frames,
    received: await received(),
  });
})();
