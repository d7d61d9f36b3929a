// One-time set-up of Cornerstone3D (core, tools, DICOM image loader) for this page.
//
// Image requests carry `Authorization: Bearer <token>` (set in the loader's beforeSend), never a
// credential of the PACS. When this bundle is served from another origin than the page (the Ground
// Truth worker page lives on https://s3.amazonaws.com), the decode web worker cannot be started from
// our URL directly (workers must be same-origin), so it is started from a same-origin blob: module
// that imports our worker chunk with CORS.

import * as core from '@cornerstonejs/core';
import * as tools from '@cornerstonejs/tools';
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { ClickPolygonTool } from './polygon.js';

let ready = null;
const tokens = new Map(); // image URL (without the wadouri: prefix) -> bearer token
let defaultToken = '';

/** The URL a token is kept under: no loader scheme, no fragment, no frame parameter. */
function tokenKey(urlOrImageId) {
  return String(urlOrImageId ?? '')
    .replace(/^(wadouri|dicomweb|wadors):/, '')
    .split('#')[0]
    .replace(/[?&]frame=\d+$/, '');
}

/**
 * Image id for a proxy URL: `/instances/{id}/file` is a DICOM file (wadouri). `key` makes the id unique
 * to one viewer (a URL fragment, never sent): Cornerstone ties annotations to image ids, so viewers
 * showing the same image side by side would otherwise share (and submit) each other's ROIs.
 */
export function imageIdFor(url, key = '') {
  const id = url.startsWith('wadouri:') || url.startsWith('wadors:') ? url : `wadouri:${url}`;
  return key ? `${id}#${key}` : id;
}

/** Remember the token for one image URL or image id (or the default token when `url` is empty). */
export function setToken(token, url = '') {
  if (url) tokens.set(tokenKey(url), token);
  else defaultToken = token;
}

function tokenFor(urlOrImageId) {
  return tokens.get(tokenKey(urlOrImageId)) ?? defaultToken;
}

function installCrossOriginWorkerShim() {
  const bundleOrigin = new URL(import.meta.url).origin;
  if (bundleOrigin === window.location.origin || window.Worker.__dicomlab) return;
  const NativeWorker = window.Worker;
  class CrossOriginWorker extends NativeWorker {
    constructor(url, options = {}) {
      const target = new URL(String(url), import.meta.url);
      if (target.origin !== window.location.origin && target.protocol !== 'blob:') {
        const source = `import ${JSON.stringify(target.href)};`;
        url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
        options = { ...options, type: 'module' };
      }
      super(url, options);
    }
  }
  CrossOriginWorker.__dicomlab = true;
  window.Worker = CrossOriginWorker;
}

/**
 * Cornerstone's `loadAndCacheImage` starts `cache.putImageLoadObject` and drops the promise it returns,
 * which rejects with the failed request when the proxy refuses an image (an unhandled rejection: the
 * page logs "Uncaught (in promise) XMLHttpRequest"). The same failure reaches whoever awaits the load
 * through the image load object's own promise (ImageViewport.show, prefetchImage), so that copy only
 * needs to be observed; the image cache itself is unchanged.
 */
function observeCachePuts() {
  const cache = core.cache;
  if (cache.putImageLoadObject.__dicomlab) return;
  const put = cache.putImageLoadObject.bind(cache);
  const observed = (imageId, imageLoadObject) => {
    const putting = put(imageId, imageLoadObject);
    putting.catch(() => null);
    return putting;
  };
  observed.__dicomlab = true;
  cache.putImageLoadObject = observed;
}

/**
 * Initialise Cornerstone3D once per page. `cpu: true` forces CPU rendering (stack viewports render on
 * a 2D canvas); by default WebGL is used and Cornerstone falls back to CPU when WebGL is missing.
 */
export function initCornerstone({ cpu = false, maxWebWorkers = 1 } = {}) {
  if (ready) return ready;
  ready = (async () => {
    installCrossOriginWorkerShim();
    await core.init();
    observeCachePuts();
    if (cpu) core.setUseCPURendering(true);
    dicomImageLoader.init({
      maxWebWorkers,
      beforeSend: (_xhr, imageId) => {
        const token = tokenFor(imageId);
        return token ? { Authorization: `Bearer ${token}` } : {};
      },
    });
    tools.init();
    for (const Tool of [
      tools.WindowLevelTool,
      tools.PanTool,
      tools.ZoomTool,
      tools.RectangleROITool,
      tools.EllipticalROITool,
      tools.PlanarFreehandROITool,
      ClickPolygonTool,
    ]) {
      tools.addTool(Tool);
    }
    return { core, tools };
  })();
  return ready;
}

const metadataLoads = new Map(); // wadors image id -> promise of its metadata being registered

/**
 * A `wadors:` image id (WADO-RS frames: the path for de-identified jobs, where the proxy refuses whole
 * files) needs its instance's metadata registered before the loader can ask for frames: fetch it once
 * from the instance's `/metadata` through the proxy, with the image's token. Other ids need nothing.
 */
export function prepareImage(imageId) {
  const id = String(imageId ?? '');
  if (!id.startsWith('wadors:')) return Promise.resolve();
  if (!metadataLoads.has(id)) {
    const url = tokenKey(id).replace(/\/frames\/[0-9,]+$/, '/metadata');
    const token = tokenFor(id);
    const headers = { Accept: 'application/dicom+json', ...(token ? { Authorization: `Bearer ${token}` } : {}) };
    const loading = fetch(url, { headers, credentials: 'omit' }).then(async (response) => {
      if (!response.ok) throw new Error(`image metadata: HTTP ${response.status}`);
      const [metadata] = await response.json();
      dicomImageLoader.wadors.metaDataManager.add(id, metadata);
    });
    loading.catch(() => metadataLoads.delete(id)); // a failed load is tried again next time
    metadataLoads.set(id, loading);
  }
  return metadataLoads.get(id);
}

/** Start downloading and decoding an image into the cache (prefetch of the next task). */
export async function prefetchImage(imageId) {
  await initCornerstone();
  return prepareImage(imageId)
    .then(() => core.imageLoader.loadAndCacheImage(imageId))
    .then(
      () => true,
      () => false,
    );
}

export { core, tools };
