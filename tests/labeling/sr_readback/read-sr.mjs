// Reads a DICOM SR the way OHIF does: dcmjs parses it, Cornerstone3D's measurement-report adapter
// turns its TID 1500 measurement groups into annotation tool states. Prints, as JSON, per tool:
// the image each annotation is attached to, its finding code, its tracking UID and its points in image
// pixel coordinates (handles, or the contour for freehand ROIs).
// Usage: node read-sr.mjs <sr.dcm> <source-image.dcm> [<source-image.dcm> ...]
import fs from 'node:fs';
import dcmjs from 'dcmjs';
import { adaptersSR } from '@cornerstonejs/adapters';
import { metaData, utilities } from '@cornerstonejs/core';

function naturalized(path) {
  const bytes = fs.readFileSync(path);
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const message = dcmjs.data.DicomMessage.readFile(buffer);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(message.dict);
}

const [srPath, ...imagePaths] = process.argv.slice(2);
const sr = naturalized(srPath);
const planes = {};
const imageIds = {};
for (const path of imagePaths) {
  const image = naturalized(path);
  const imageId = `wadouri:file://${path}`;
  imageIds[`${image.SOPInstanceUID}:1`] = imageId;
  // The plane Cornerstone's DICOM loader gives a projection radiograph without patient geometry:
  // the first pixel's centre at the origin, rows along x, columns along y.
  const spacing = image.PixelSpacing || image.ImagerPixelSpacing || [1, 1];
  planes[imageId] = { imagePositionPatient: [0, 0, 0], rowCosines: [1, 0, 0], columnCosines: [0, 1, 0],
                      rowPixelSpacing: Number(spacing[0]) || 1, columnPixelSpacing: Number(spacing[1]) || 1,
                      rows: image.Rows, columns: image.Columns,
                      frameOfReferenceUID: image.FrameOfReferenceUID };
}
metaData.addProvider((type, imageId) => (type === 'imagePlaneModule' ? planes[imageId] : undefined), 10000);

const state = adaptersSR.Cornerstone3D.MeasurementReport.generateToolState(sr, imageIds, metaData);
const tools = {};
for (const [toolName, measurements] of Object.entries(state)) {
  tools[toolName] = measurements.map((m) => {
    const { data, metadata } = m.annotation;
    const world = data.handles?.points?.length ? data.handles.points : (data.contour?.polyline ?? []);
    return {
      referencedImageId: metadata.referencedImageId,
      sopInstanceUid: m.sopInstanceUid,
      trackingUid: m.TrackingUniqueIdentifier,
      finding: m.finding ? { value: m.finding.CodeValue, scheme: m.finding.CodingSchemeDesignator,
                             meaning: m.finding.CodeMeaning } : null,
      closed: data.contour ? data.contour.closed : null,
      points: world.map((p) => utilities.worldToImageCoords(metadata.referencedImageId, p)),
    };
  });
}
// One JSON line on stdout, marked, so library log lines around it cannot be mistaken for it.
process.stdout.write(`SR-READBACK ${JSON.stringify({ imageIds, tools })}\n`);
