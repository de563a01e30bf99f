// zone-maintenance scheduler plugin (JavaScript, componentize-js).
//
// Behaviour: see ../README.md. componentize-js maps the exported interface
// `trellis:plugin/scheduler` to the exported object `scheduler`, with
// camelCase method and field names. A `result<T, plugin-error>` returns T, or
// the thrown value as the error: throw the variant itself,
// `{ tag: 'invalid-config', val: message }` (not an `Error`, which traps).
// Flags are objects of booleans, `list<u8>` is a Uint8Array, u32 a Number.

const MAINTENANCE_REASON = 'node(s) under maintenance';
const ZONE_LABEL = 'topology.kubernetes.io/zone';

let preferredZones = [];
// node id -> { maintenance: boolean, rank: number | undefined }
const nodes = new Map();

// componentize-js 0.23 lifts every string argument with `new TextDecoder()`,
// which drops a leading U+FEFF. Put it back, so that strings arrive intact and a
// config starting with a byte order mark is refused as in the other languages.
const decode = TextDecoder.prototype.decode;
TextDecoder.prototype.decode = function (input, options) {
  const text = decode.call(this, input, options);
  const b = ArrayBuffer.isView(input) ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : null;
  const bom = b !== null && b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf;
  return bom && !this.ignoreBOM ? '\uFEFF' + text : text;
};

const invalidConfig = (msg) => ({ tag: 'invalid-config', val: msg });

// JSON.parse accepts lone surrogate escapes ("\ud800"); they are not text.
const isWellFormed = (s) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

function parseConfig(config) {
  // JSON.parse here (SpiderMonkey) skips a leading byte order mark; JSON does not.
  if (config.startsWith('\uFEFF')) throw invalidConfig('config is not valid JSON: byte order mark');
  let doc;
  try {
    doc = JSON.parse(config);
  } catch (e) {
    throw invalidConfig(`config is not valid JSON: ${e && e.message}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw invalidConfig('config must be a JSON object');
  }
  for (const key of Object.keys(doc)) {
    if (key !== 'preferredZones') {
      throw invalidConfig(`unknown field \`${key}\`, expected \`preferredZones\``);
    }
  }
  // JSON.parse keeps the last of duplicate keys; a strict parser refuses them.
  if (countTopLevelKey(config, 'preferredZones') > 1) {
    throw invalidConfig('duplicate field `preferredZones`');
  }
  const zones = 'preferredZones' in doc ? doc.preferredZones : [];
  if (!Array.isArray(zones) || !zones.every((z) => typeof z === 'string' && isWellFormed(z))) {
    throw invalidConfig('`preferredZones` must be a list of strings');
  }
  return zones;
}

// Count how often `key` appears as a key of the top-level object of the
// (already validated) JSON text `text`. Only needed to reject duplicate keys.
function countTopLevelKey(text, key) {
  let depth = 0;
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1) {
        // A string at depth 1 directly followed by ':' is a key.
        let k = j + 1;
        while (' \t\n\r'.includes(text[k])) k++;
        if (text[k] === ':' && JSON.parse(text.slice(i, j + 1)) === key) count++;
      }
      i = j;
    }
  }
  return count;
}

// The value of the first label with `key` (as the Rust SDK's `label_value`).
const labelValue = (labels, key) => labels.find((l) => l.key === key)?.value;

function lookup(id) {
  const node = nodes.get(id);
  if (node === undefined) throw { tag: 'invalid-input', val: `unknown node id ${id}` };
  return node;
}

export const scheduler = {
  info() {
    // Verdicts and scores depend on nodes only: the host sends no pods, and
    // `prepare` no part of the pod being scheduled.
    return {
      name: 'ZoneMaintenance',
      version: '0.4.0',
      phases: { filter: true, score: true },
      tracksPods: false,
      podFields: {},
      // Of a node it reads the labels only.
      nodeFields: { labels: true },
    };
  },

  configure(config) {
    preferredZones = parseConfig(config);
  },

  upsertNode(id, node) {
    const labels = node.labels ?? []; // undefined for a node without labels
    const maintenance = labelValue(labels, 'maintenance') === 'true';
    const zone = labelValue(labels, ZONE_LABEL);
    const i = zone === undefined ? -1 : preferredZones.indexOf(zone); // first match
    nodes.set(id, { maintenance, rank: i < 0 ? undefined : i });
  },

  removeNode(id) {
    nodes.delete(id);
  },

  // Never called (the plugin tracks no pods), but part of the interface.
  assumePod(_node, _pod) {},

  forgetPod(_node, _uid) {},

  // The pod does not change the answers: both phases apply to every pod.
  prepare(_pod) {
    return { filter: true, score: true };
  },

  filter(candidates, maxFeasible) {
    const feasible = [];
    const rejected = [];
    const reasons = [];
    for (const id of candidates) {
      if (lookup(id).maintenance) {
        // The only reason this plugin gives: added once, always index 0.
        if (reasons.length === 0) reasons.push({ message: MAINTENANCE_REASON, unresolvable: true });
        rejected.push(id);
      } else {
        feasible.push(id);
        if (maxFeasible > 0 && feasible.length === maxFeasible) break;
      }
    }
    // Every refused node's reason is index 0.
    return { feasible, rejected, rejectedReasons: new Uint8Array(rejected.length), reasons };
  },

  score(candidates) {
    const n = preferredZones.length;
    const scores = new Uint8Array(candidates.length);
    candidates.forEach((id, k) => {
      const { rank } = lookup(id);
      scores[k] = rank === undefined ? 0 : 100 - Math.floor((rank * 100) / n);
    });
    return scores;
  },
};
