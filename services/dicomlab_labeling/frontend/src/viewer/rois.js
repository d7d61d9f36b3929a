// ROIs: the Cornerstone annotations drawn on the current image, the finding each belongs to, the ROI
// panel (the finding for new ROIs, the list with each ROI's finding and a remove button), and their
// conversion to and from the answer's image pixel coordinates (see answer.js).

import { boundingCorners, NO_FINDING } from './answer.js';
import { core, tools } from './cornerstone.js';
import { el, replaceChildren } from './dom.js';
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
    this.findingsByAnnotation = new Map();
    this.newFinding = labels.find((l) => l !== NO_FINDING) ?? labels[0];
    this.select = el('select', {
      id: `${id}-roi-finding`,
      onchange: () => {
        this.newFinding = this.select.value;
        this.releaseFocus(this.select);
      },
    });
    for (const label of labels) this.select.append(el('option', { value: label }, label));
    this.select.value = this.newFinding ?? '';
    this.list = el('ul', { class: 'dl-roi-list', 'aria-label': 'Regions of interest' });
    this.el = el(
      'div',
      { class: 'dl-roi-panel' },
      el('h2', {}, 'ROIs'),
      readOnly ? null : el('label', { for: `${id}-roi-finding` }, 'Finding for new ROIs '),
      readOnly ? null : this.select,
      this.list,
    );
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
      this.onFindingUsed(finding);
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
        points: this.points(a),
        imageId: this.imageId,
      }))
      .filter((r) => r.points.length >= 2);
  }

  /** The ROIs as plain JSON for undo snapshots (only those tied to a finding by this viewer). */
  snapshot() {
    return this.rois()
      .filter((r) => this.findingsByAnnotation.has(r.uid))
      .map(({ tool, finding, points }) => ({ tool, finding, points }));
  }

  /** Tie ROI `uid` to `finding`. */
  assign(uid, finding) {
    this.findingsByAnnotation.set(uid, finding);
    const a = tools.annotation.state.getAnnotation(uid);
    if (a) a.data.label = finding;
    this.onFindingUsed(finding);
    this.view.render();
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
      for (const label of this.labels) select.append(el('option', { value: label }, label));
      select.value = roi.finding;
      return el(
        'li',
        { dataset: { tool: roi.tool } },
        el('span', {}, `${i + 1}. ${roi.tool} `),
        select,
        this.readOnly
          ? null
          : el('button', { type: 'button', 'aria-label': `Remove ROI ${i + 1}`, onclick: () => this.remove(roi.uid) }, '✕'),
      );
    });
    replaceChildren(this.list, items);
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
    this.renderList();
  }

  /** Next / previous finding for new ROIs ([ / ]). */
  cycleNewFinding(step) {
    const labels = this.labels.filter((l) => l !== NO_FINDING);
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
      const toolName = Object.entries(ROI_TOOL_BY_NAME).find(([, t]) => t === roi.tool)?.[0];
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
