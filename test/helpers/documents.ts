/** A markdown document of about `chars` characters, like a long changelog, with `images` images spread through it. */
export function bigMarkdown(chars: number, images: number): string {
  const paragraph = 'Changes in this release: fixed a crash on start-up, made `--flag` faster, and *documented* the [options](#options).\n\n';
  const parts: string[] = [];
  const per = Math.max(1, Math.floor(chars / paragraph.length / images));
  for (let i = 0; i < images; i++) {
    parts.push(`## Section ${i}\n\n![](image-${i}.png)\n\n`);
    for (let j = 0; j < per; j++) parts.push(paragraph);
  }
  return parts.join('');
}
