// A small MessagePack codec for the data channel (maps, arrays, strings, numbers, booleans, nil, bin).
// Our own code: the client has no build step and loads no third-party scripts.

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

export function encode(value) {
  const out = [];
  const bytes = (...b) => out.push(...b);
  const u16 = (n) => bytes((n >> 8) & 0xff, n & 0xff);
  const u32 = (n) => bytes((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  const write = (v) => {
    if (v === null || v === undefined) bytes(0xc0);
    else if (v === true) bytes(0xc3);
    else if (v === false) bytes(0xc2);
    else if (typeof v === "number") {
      if (Number.isInteger(v) && v >= 0 && v < 2 ** 32) {
        if (v < 128) bytes(v);
        else if (v < 256) bytes(0xcc, v);
        else if (v < 65536) { bytes(0xcd); u16(v); }
        else { bytes(0xce); u32(v); }
      } else if (Number.isInteger(v) && v < 0 && v >= -(2 ** 31)) {
        if (v >= -32) bytes(v & 0xff);
        else { bytes(0xd2); u32(v >>> 0); }
      } else {
        const view = new DataView(new ArrayBuffer(8));
        view.setFloat64(0, v);
        bytes(0xcb, ...new Uint8Array(view.buffer));
      }
    } else if (typeof v === "string") {
      const b = utf8.encode(v);
      if (b.length < 32) bytes(0xa0 | b.length);
      else if (b.length < 256) bytes(0xd9, b.length);
      else if (b.length < 65536) { bytes(0xda); u16(b.length); }
      else { bytes(0xdb); u32(b.length); }
      bytes(...b);
    } else if (v instanceof Uint8Array) {
      if (v.length < 256) bytes(0xc4, v.length); else { bytes(0xc6); u32(v.length); }
      bytes(...v);
    } else if (Array.isArray(v)) {
      if (v.length < 16) bytes(0x90 | v.length); else { bytes(0xdc); u16(v.length); }
      v.forEach(write);
    } else if (typeof v === "object") {
      const keys = Object.keys(v);
      if (keys.length < 16) bytes(0x80 | keys.length); else { bytes(0xde); u16(keys.length); }
      for (const k of keys) { write(k); write(v[k]); }
    } else throw new TypeError(`cannot encode ${typeof v}`);
  };
  write(value);
  return new Uint8Array(out);
}

export function decode(buffer) {
  const data = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const str = (n) => { const s = utf8d.decode(data.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { const b = data.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => Array.from({ length: n }, () => read());
  const map = (n) => { const o = {}; for (let i = 0; i < n; i++) { const k = read(); o[k] = read(); } return o; };
  const take = (size, get) => { const v = get(pos); pos += size; return v; };
  const read = () => {
    const t = data[pos++];
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(take(1, (p) => view.getUint8(p)));
      case 0xc5: return bin(take(2, (p) => view.getUint16(p)));
      case 0xc6: return bin(take(4, (p) => view.getUint32(p)));
      case 0xca: return take(4, (p) => view.getFloat32(p));
      case 0xcb: return take(8, (p) => view.getFloat64(p));
      case 0xcc: return take(1, (p) => view.getUint8(p));
      case 0xcd: return take(2, (p) => view.getUint16(p));
      case 0xce: return take(4, (p) => view.getUint32(p));
      case 0xcf: return Number(take(8, (p) => view.getBigUint64(p)));
      case 0xd0: return take(1, (p) => view.getInt8(p));
      case 0xd1: return take(2, (p) => view.getInt16(p));
      case 0xd2: return take(4, (p) => view.getInt32(p));
      case 0xd3: return Number(take(8, (p) => view.getBigInt64(p)));
      case 0xd9: return str(take(1, (p) => view.getUint8(p)));
      case 0xda: return str(take(2, (p) => view.getUint16(p)));
      case 0xdb: return str(take(4, (p) => view.getUint32(p)));
      case 0xdc: return arr(take(2, (p) => view.getUint16(p)));
      case 0xdd: return arr(take(4, (p) => view.getUint32(p)));
      case 0xde: return map(take(2, (p) => view.getUint16(p)));
      case 0xdf: return map(take(4, (p) => view.getUint32(p)));
      default: throw new Error(`unsupported msgpack type 0x${t.toString(16)}`);
    }
  };
  return read();
}
