// ROIs: the Cornerstone annotations drawn on the current image, the finding each belongs to, the ROI
// panel (the finding for new ROIs, the list with each ROI's finding and a remove button, the statistics
// toggle), the text drawn next to each ROI (its finding's name; mean / std / area only when asked), and
// their conversion to and from the answer's image pixel coordinates (see answer.js).
//
// Draw first, choose after: by default a new ROI has no finding yet ("unassigned") and is selected; the
// reader then presses the finding's key (or picks it in the list). An unassigned ROI blocks submitting.

import { boundingCorners, NO_FINDING } from './answer.js';
import { core, tools } from './cornerstone.js';
import { el, replaceChildren } from './dom.js';
import { polygonStats } from './polygon.js';
import { ROI_TOOL_BY_NAME } from './viewport.js';

export class RoiLayer {
  /**
   * @param {object} options  id, labels, readOnly, view (the ImageViewport), onFindingUsed(label) (an
   *   ROI was tied to `label`: the finding is there), onChange(key) (record the change), releaseFocus(control)
   */
  constructor({ id, labels, readOnly, view, onFindingUsed, onChange, releaseFocus }) {
    this.labels = labels;
    this.readOnly = readOnly;
    this.view = view;
    this.onFindingUsed = onFindingUsed;
    this.onChange = onChange;
    this.releaseFocus = releaseFocus;
    this.findingsByAnnotation = new Map(); // uid -> finding ('' = not chosen yet)
    this.selected = null; // the ROI a finding's key assigns while it has no finding
    this.showStats = false;
    this.newFinding = ''; // '' = choose after drawing
    this.select = el('select', {
      id: `${id}-roi-finding`,
      onchange: () => {
        this.newFinding = this.select.value;
        this.releaseFocus(this.select);
      },
    });
    this.select.append(el('option', { value: '' }, 'Choose after drawing'));
    for (const label of labels) this.select.append(el('option', { value: label }, label));
    this.select.value = this.newFinding;
    this.list = el('ul', { class: 'dl-roi-list', 'aria-label': 'Regions of interest' });
    this.statsToggle = el('input', {
      type: 'checkbox',
      id: `${id}-roi-stats`,
      class: 'dl-roi-stats',
      onchange: () => {
        this.setShowStats(this.statsToggle.checked);
        this.releaseFocus(this.statsToggle);
      },
    });
    this.el = el(
      'div',
      { class: 'dl-roi-panel' },
      el('h2', {}, 'ROIs'),
      readOnly ? null : el('label', { for: `${id}-roi-finding` }, 'Finding for new ROIs '),
      readOnly ? null : this.select,
      this.list,
      el('label', { class: 'dl-roi-stats-label' }, this.statsToggle, ' Show statistics (mean, std, area) (Shift+I)'),
    );
  }

  /** Show or hide each ROI's statistics on the image (hidden by default: they distract from reading). */
  setShowStats(show) {
    this.showStats = Boolean(show);
    this.statsToggle.checked = this.showStats;
    this.el.dataset.stats = this.showStats ? 'shown' : 'hidden';
    for (const a of this.annotations()) a.invalidated = true;
    this.view.render();
  }

  /** The text drawn next to an ROI: its finding (or that it has none yet), then its statistics if asked. */
  textLines(data, targetId) {
    const lines = [data.label ? data.label : 'No finding yet: press its key'];
    if (!this.showStats) return lines;
    let stats = data.cachedStats?.[Array.isArray(targetId) ? targetId[0] : targetId] ?? {};
    if (!Number.isFinite(stats.mean) && data.spline) stats = { ...stats, ...this.clickPolygonStats(data) };
    const round = (v) => Math.round(v * 100) / 100;
    if (Number.isFinite(stats.mean)) lines.push(`Mean: ${round(stats.mean)}`);
    if (Number.isFinite(stats.stdDev)) lines.push(`Std: ${round(stats.stdDev)}`);
    if (Number.isFinite(stats.area)) lines.push(`Area: ${round(stats.area)} ${stats.areaUnit ?? ''}`.trim());
    return lines;
  }

  /** Mean and std inside a click-placed polygon (computed once per shape). */
  clickPolygonStats(data) {
    const image = this.imageId ? core.cache.getImage(this.imageId) : null;
    if (!image) return {};
    const vertices = (data.handles?.points ?? []).map((p) => core.utilities.worldToImageCoords(this.imageId, p));
    const key = JSON.stringify(vertices);
    if (data.dicomlabStats?.key !== key) {
      data.dicomlabStats = { key, stats: polygonStats(image.getPixelData(), image.columns, image.rows, vertices) };
    }
    return data.dicomlabStats.stats;
  }

  /** The selected ROI when it has no finding yet (a finding's key then assigns it), else null. */
  selectedUnassigned() {
    const uid = this.selected;
    return uid && this.findingsByAnnotation.get(uid) === '' && this.rois().some((r) => r.uid === uid) ? uid : null;
  }

  /** The ROIs that have no finding yet. */
  unassigned() {
    return this.rois().filter((r) => !r.finding);
  }

  get imageId() {
    return this.view.imageId;
  }

  annotations() {
    if (!this.imageId) return [];
    const all = tools.annotation.state.getAllAnnotations?.() ?? [];
    return all.filter(
      (a) => ROI_TOOL_BY_NAME[a.metadata?.toolName] && a.metadata?.referencedImageId === this.imageId && !a.isPreview,
    );
  }

  /** A Cornerstone annotation event (completed / modified / removed) of any viewer. */
  handle(event) {
    const a = event.detail?.annotation;
    if (!a || !ROI_TOOL_BY_NAME[a.metadata?.toolName]) return;
    if (event.type === tools.Enums.Events.ANNOTATION_COMPLETED && !this.findingsByAnnotation.has(a.annotationUID)) {
      if (a.metadata?.referencedImageId !== this.imageId) return;
      const finding = this.newFinding;
      this.findingsByAnnotation.set(a.annotationUID, finding);
      a.data.label = finding;
      this.selected = a.annotationUID;
      if (finding) this.onFindingUsed(finding);
    }
    this.renderList();
    // An ROI being drawn is not part of the answer yet (it is when completed); one handle drag fires many
    // "modified" events: they make one undo step.
    const modified = event.type === tools.Enums.Events.ANNOTATION_MODIFIED;
    if (modified && !this.findingsByAnnotation.has(a.annotationUID)) return;
    this.onChange(modified ? `modify:${a.annotationUID}` : null);
  }

  points(a) {
    const toImage = (p) => core.utilities.worldToImageCoords(this.imageId, p);
    const tool = ROI_TOOL_BY_NAME[a.metadata.toolName];
    if (a.metadata.toolName === 'ClickPolygonROI') return (a.data?.handles?.points ?? []).map(toImage).map(([x, y]) => [x, y]);
    if (tool === 'polygon') {
      const polyline = a.data?.contour?.polyline ?? a.data?.polyline ?? [];
      return polyline.map(toImage).map(([x, y]) => [x, y]);
    }
    const handles = (a.data?.handles?.points ?? []).map(toImage);
    return handles.length ? boundingCorners(handles) : [];
  }

  /** The ROIs of the current image: {uid, tool, finding, points (image pixels), imageId}. */
  rois() {
    return this.annotations()
      .map((a) => ({
        uid: a.annotationUID,
        tool: ROI_TOOL_BY_NAME[a.metadata.toolName],
        finding: this.findingsByAnnotation.get(a.annotationUID) ?? a.data?.label ?? '',
        closed: a.metadata.toolName !== 'ClickPolygonROI' || Boolean(a.data?.contour?.closed),
        points: this.points(a),
        imageId: this.imageId,
      }))
      .filter((r) => r.points.length >= 2 && r.closed)
      .map(({ closed, ...roi }) => roi);
  }

  /** The ROIs as plain JSON for undo snapshots (only those tied to a finding by this viewer). */
  snapshot() {
    return this.rois()
      .filter((r) => this.findingsByAnnotation.has(r.uid))
      .map(({ tool, finding, points }) => ({ tool, finding, points }));
  }

  /** Tie ROI `uid` to `finding` (a finding's key, or the list). */
  assign(uid, finding) {
    this.findingsByAnnotation.set(uid, finding);
    const a = tools.annotation.state.getAnnotation(uid);
    if (a) {
      a.data.label = finding;
      a.invalidated = true;
    }
    if (finding) this.onFindingUsed(finding);
    this.view.render();
    this.renderList();
  }

  renderList() {
    const items = this.rois().map((roi, i) => {
      const select = el('select', {
        'aria-label': `Finding of ROI ${i + 1}`,
        disabled: this.readOnly,
        onchange: () => {
          this.assign(roi.uid, select.value);
          this.releaseFocus(select);
          this.onChange(null);
        },
      });
      select.append(el('option', { value: '', disabled: true }, 'Choose its finding'));
      for (const label of this.labels) select.append(el('option', { value: label }, label));
      select.value = roi.finding;
      const selected = roi.uid === this.selected;
      return el(
        'li',
        {
          dataset: { tool: roi.tool, finding: roi.finding, unassigned: roi.finding ? 'false' : 'true' },
          class: selected ? 'dl-selected' : null,
          'aria-current': selected ? 'true' : null,
        },
        el('button', { type: 'button', class: 'dl-roi-pick', 'aria-label': `Select ROI ${i + 1}`, onclick: () => this.pick(roi.uid) },
          `${i + 1}. ${roi.tool}`),
        select,
        this.readOnly
          ? null
          : el('button', { type: 'button', 'aria-label': `Remove ROI ${i + 1}`, onclick: () => this.remove(roi.uid) }, '✕'),
      );
    });
    replaceChildren(this.list, items);
  }

  /** Select ROI `uid` (a finding's key then assigns it when it has no finding yet). */
  pick(uid) {
    this.selected = uid;
    this.renderList();
    this.view.element.focus({ preventScroll: true });
  }

  remove(uid, { silent = false } = {}) {
    tools.annotation.state.removeAnnotation(uid);
    this.findingsByAnnotation.delete(uid);
    this.view.render();
    this.renderList();
    if (!silent) this.onChange(null);
  }

  removeLast() {
    const rois = this.rois();
    if (rois.length) this.remove(rois[rois.length - 1].uid);
  }

  clear() {
    for (const a of this.annotations()) tools.annotation.state.removeAnnotation(a.annotationUID);
    this.findingsByAnnotation.clear();
    this.selected = null;
    this.renderList();
  }

  /** Next / previous finding for new ROIs ([ / ]). */
  cycleNewFinding(step) {
    const labels = ['', ...this.labels.filter((l) => l !== NO_FINDING)];
    if (!labels.length) return;
    const i = labels.indexOf(this.newFinding);
    this.newFinding = labels[(i + step + labels.length) % labels.length];
    this.select.value = this.newFinding;
  }

  /** Draw ROIs of an earlier answer (image pixel coordinates) as annotations. */
  show(rois) {
    const viewport = this.view.viewport;
    const camera = viewport.getCamera();
    const toWorld = (p) => core.utilities.imageToWorldCoords(this.imageId, p);
    for (const roi of rois) {
      // A polygon comes back as a closed freehand contour (the same vertices, editable by dragging).
      const toolName = { rectangle: 'RectangleROI', ellipse: 'EllipticalROI', polygon: 'PlanarFreehandROI' }[roi.tool];
      if (!toolName || !Array.isArray(roi.points) || roi.points.length < 2) continue;
      let data;
      if (roi.tool === 'polygon') {
        const polyline = roi.points.map(toWorld);
        data = { handles: { points: [], activeHandleIndex: null, textBox: {} }, contour: { polyline, closed: true } };
      } else {
        const [[x0, y0], [x1, y1]] = roi.points;
        const points =
          roi.tool === 'rectangle'
            ? [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]
            : [[(x0 + x1) / 2, y1], [(x0 + x1) / 2, y0], [x0, (y0 + y1) / 2], [x1, (y0 + y1) / 2]];
        data = { handles: { points: points.map(toWorld), activeHandleIndex: null, textBox: {} } };
      }
      data.label = roi.finding;
      data.cachedStats = {};
      const uid = core.utilities.uuidv4();
      tools.annotation.state.addAnnotation(
        {
          annotationUID: uid,
          highlighted: false,
          invalidated: true,
          isLocked: Boolean(this.readOnly),
          metadata: {
            toolName,
            referencedImageId: this.imageId,
            FrameOfReferenceUID: viewport.getFrameOfReferenceUID(),
            viewPlaneNormal: camera.viewPlaneNormal,
            viewUp: camera.viewUp,
          },
          data,
        },
        this.view.element,
      );
      this.findingsByAnnotation.set(uid, roi.finding);
    }
    viewport.render();
    this.renderList();
  }
}
