// The facts a reader needs on the image itself: view position (PA / AP / lateral — AP versus PA matters
// for judging heart size), laterality, and the patient's age and sex only where the job allows patient
// identifiers (de-identified images carry none of these anyway). Read from the image's own metadata:
// the WADO-RS JSON (de-identified jobs) or the parsed file (wadouri).
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';

const TAGS = {
  viewPosition: ['x00185101', '00185101', 'ViewPosition'],
  imageLaterality: ['x00200062', '00200062', 'ImageLaterality'],
  laterality: ['x00200060', '00200060', 'Laterality'],
  age: ['x00101010', '00101010', 'PatientAge'],
  sex: ['x00100040', '00100040', 'PatientSex'],
};

const VIEWS = { PA: 'PA', AP: 'AP', LL: 'Lateral (LL)', RL: 'Lateral (RL)', LATERAL: 'Lateral', LAT: 'Lateral' };

/** One string attribute from whichever form the image's metadata has, or ''. */
function reader(imageId, image) {
  let json = null;
  if (imageId.startsWith('wadors:')) json = dicomImageLoader.wadors.metaDataManager.get(imageId) ?? null;
  const data = image?.data;
  let dataSet = data?.elements && typeof data.string === 'function' ? data : null;
  if (!dataSet && !json && imageId.startsWith('wadouri:')) {
    const url = dicomImageLoader.wadouri.parseImageId(imageId).url;
    dataSet = dicomImageLoader.wadouri.dataSetCacheManager.get(url) ?? null;
  }
  const natural = data && !data.elements && typeof data === 'object' ? data : null;
  return ([dsTag, jsonTag, keyword]) => {
    let value;
    if (json) value = json[jsonTag]?.Value?.[0];
    else if (dataSet) value = dataSet.string(dsTag);
    else if (natural) value = natural[keyword];
    if (Array.isArray(value)) value = value[0];
    return String(value ?? '').trim();
  };
}

/** "058Y" → "58 y"; other units kept ("6M" → "6 mo"). */
export function ageText(value) {
  const m = /^0*(\d+)\s*([DWMY])$/i.exec(String(value ?? '').trim());
  if (!m) return '';
  const unit = { D: 'd', W: 'wk', M: 'mo', Y: 'y' }[m[2].toUpperCase()];
  return `${Number(m[1])} ${unit}`;
}

/** Age in whole years at `on` (a Date) from a DICOM date "YYYYMMDD", or ''. */
export function ageFromBirthDate(birthDate, on = new Date()) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(birthDate ?? ''));
  if (!m) return '';
  let years = on.getUTCFullYear() - Number(m[1]);
  const before = on.getUTCMonth() + 1 < Number(m[2]) || (on.getUTCMonth() + 1 === Number(m[2]) && on.getUTCDate() < Number(m[3]));
  if (before) years -= 1;
  return years >= 0 && years < 150 ? `${years} y` : '';
}

/**
 * The overlay's parts: `{ view, laterality, age, sex }` (empty strings when unknown). `patient`: the
 * assignment's patient facts, given only when the job allows identifiers; without it no age or sex is
 * shown, whatever the file carries.
 */
export function overlayFacts(imageId, image, patient = null) {
  const read = reader(imageId, image);
  const view = read(TAGS.viewPosition).toUpperCase();
  const lat = (read(TAGS.imageLaterality) || read(TAGS.laterality)).toUpperCase();
  const facts = {
    view: VIEWS[view] ?? view,
    // U (unpaired: a chest) says nothing to the reader.
    laterality: ['L', 'R', 'B'].includes(lat) ? lat : '',
    age: '',
    sex: '',
  };
  if (patient) {
    facts.age = ageText(read(TAGS.age)) || ageFromBirthDate(patient.birthDate);
    facts.sex = String(patient.sex || read(TAGS.sex) || '').toUpperCase();
  }
  return facts;
}

/** The overlay's text: "PA · L · 58 y · F" (parts left out when unknown). */
export function overlayText(facts) {
  const parts = [];
  if (facts.view) parts.push(facts.view);
  if (facts.laterality) parts.push(`Laterality ${facts.laterality}`);
  if (facts.age) parts.push(facts.age);
  if (facts.sex) parts.push(facts.sex);
  return parts.join(' · ');
}
