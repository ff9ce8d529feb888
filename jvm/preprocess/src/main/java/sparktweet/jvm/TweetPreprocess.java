package sparktweet.jvm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.GZIPInputStream;

import org.apache.spark.sql.api.java.UDF1;

/**
 * JVM backend of sparktweet's TweetPreprocessor: tweet text to tokens, with no Python round trip.
 *
 * <p>A line-by-line port of {@code sparktweet/text.py} (its module docstring lists the steps);
 * both read the same resource files, which the build script bundles into the jar under
 * {@code sparktweet/resources/}. Python's {@code str.isalnum} is Unicode letters (L*) and numbers
 * (Nd, Nl, No), which is what {@link #isAlnum(int)} tests, and Python's {@code str.lower} is
 * {@code toLowerCase(Locale.ROOT)}. Tokens are scanned by hand rather than with a regex so a
 * long run of apostrophes cannot overflow the regex engine's stack.
 *
 * <p>Registered from Python with {@code spark.udf.registerJavaFunction(name,
 * "sparktweet.jvm.TweetPreprocess", ArrayType(StringType()))}.
 */
public final class TweetPreprocess implements UDF1<String, String[]> {
    private static final long serialVersionUID = 1L;

    static final String RESOURCES = "/sparktweet/resources/";
    static final String URL_TOKEN = "xurl";
    static final String MENTION_TOKEN = "xmention";
    static final String NUMBER_TOKEN = "xnum";
    static final String EMOJI_TOKEN = "xemoji";

    private static final Pattern ENTITY =
            Pattern.compile("&(?:#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6})|(amp|lt|gt|quot|apos|nbsp));");
    // Python's \s for str patterns, spelled out as in text.py.
    private static final String WS =
            "\\t\\n\\x0B\\f\\r\\x1C-\\x1F \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
    private static final Pattern URL = Pattern.compile("(?:https?://|www\\.)[^" + WS + "]*");
    private static final Pattern MENTION = Pattern.compile("@(?<![A-Za-z0-9_]@)[A-Za-z0-9_]+");
    private static final String[] CLITICS = {"'s", "'re", "'ve", "'ll", "'d", "'m"};
    private static final Map<String, String> NAMED_ENTITIES = Map.of(
            "amp", "&", "lt", "<", "gt", ">", "quot", "\"", "apos", "'", "nbsp", "\u00a0");

    @Override
    public String[] call(String text) {
        if (text == null) {
            return null;
        }
        return Tables.INSTANCE.tokenize(text).toArray(new String[0]);
    }

    /** Tokens of {@code text} with the bundled resources; empty for empty text. */
    public static List<String> tokenize(String text) {
        return text == null ? Collections.emptyList() : Tables.INSTANCE.tokenize(text);
    }

    static boolean isAlnum(int cp) {
        if (Character.isLetter(cp)) {
            return true;
        }
        int type = Character.getType(cp);
        return type == Character.DECIMAL_DIGIT_NUMBER || type == Character.LETTER_NUMBER || type == Character.OTHER_NUMBER;
    }

    /** The resource tables, loaded once per JVM from the jar the first time a row is processed. */
    static final class Tables {
        static final Tables INSTANCE = new Tables();

        private final Map<String, String> lemmas = new HashMap<>(65536);
        private final Set<String> stopWords = new HashSet<>();
        /** Emoji code point to its replacement: the token padded with spaces, or a space to drop it. */
        private final Map<Integer, String> emoji = new HashMap<>();
        private final List<int[]> emojiRanges = new ArrayList<>();
        private final Map<String, String[]> contractions = new HashMap<>();
        private final int firstEmoji;

        private Tables() {
            readTsv("lemmas.tsv.gz", 2, row -> lemmas.put(row[0], row[1]));
            readTsv("stopwords.txt", 1, row -> stopWords.add(row[0]));
            readTsv("contractions.tsv", 2, row -> contractions.put(row[0], row[1].split(" ")));
            readTsv("emoji.tsv", 2, row -> {
                int dash = row[0].indexOf('-');
                if (dash >= 0) {
                    emojiRanges.add(new int[] {Integer.parseInt(row[0].substring(0, dash), 16),
                            Integer.parseInt(row[0].substring(dash + 1), 16)});
                } else {
                    emoji.put(Integer.parseInt(row[0], 16), "-".equals(row[1]) ? " " : " " + row[1] + " ");
                }
            });
            int first = Integer.MAX_VALUE;
            for (int[] range : emojiRanges) {
                first = Math.min(first, range[0]);
            }
            for (int cp : emoji.keySet()) {
                first = Math.min(first, cp);
            }
            firstEmoji = first;
        }

        private static void readTsv(String name, int width, Consumer<String[]> sink) {
            InputStream raw = TweetPreprocess.class.getResourceAsStream(RESOURCES + name);
            if (raw == null) {
                throw new IllegalStateException("Resource " + RESOURCES + name
                        + " is missing from the sparktweet JVM jar; rebuild it with jvm/preprocess/build.sh.");
            }
            try (InputStream in = name.endsWith(".gz") ? new GZIPInputStream(raw) : raw;
                 BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
                String line;
                while ((line = reader.readLine()) != null) {
                    if (line.isEmpty() || line.startsWith("#")) {
                        continue;
                    }
                    String[] fields = line.split("\t", -1);
                    if (fields.length != width) {
                        throw new IllegalStateException("Resource line '" + line + "' of " + name + " has "
                                + fields.length + " tab-separated fields, expected " + width + ".");
                    }
                    sink.accept(fields);
                }
            } catch (IOException e) {
                throw new UncheckedIOException("Cannot read resource " + name + " from the sparktweet JVM jar", e);
            }
        }

        List<String> tokenize(String text) {
            List<String> out = new ArrayList<>();
            if (text.isEmpty()) {
                return out;
            }
            try {
                if (text.indexOf('&') >= 0) {
                    text = unescape(text);
                }
                text = text.toLowerCase(Locale.ROOT);
                text = URL.matcher(text).replaceAll(" " + URL_TOKEN + " ");
                if (text.indexOf('@') >= 0) {
                    text = MENTION.matcher(text).replaceAll(" " + MENTION_TOKEN + " ");
                }
                text = replaceEmoji(text).replace('\u2019', '\'').replace('\u2018', '\'');
                int n = text.length();
                int i = 0;
                while (i < n) {
                    int cp = text.codePointAt(i);
                    if (!isAlnum(cp)) {
                        i += Character.charCount(cp);
                        continue;
                    }
                    int start = i;
                    i = endOfAlnumRun(text, i);
                    while (i + 1 < n && text.charAt(i) == '\'' && isAlnum(text.codePointAt(i + 1))) {
                        i = endOfAlnumRun(text, i + 1);
                    }
                    normalise(text.substring(start, i), out);
                }
            } catch (RuntimeException | StackOverflowError e) {
                // One odd tweet must not fail a Spark task; text.py returns [] the same way.
                out.clear();
            }
            return out;
        }

        private static int endOfAlnumRun(String text, int i) {
            int n = text.length();
            while (i < n) {
                int cp = text.codePointAt(i);
                if (!isAlnum(cp)) {
                    break;
                }
                i += Character.charCount(cp);
            }
            return i;
        }

        private static String unescape(String text) {
            Matcher m = ENTITY.matcher(text);
            StringBuilder sb = new StringBuilder(text.length());
            while (m.find()) {
                String replacement;
                if (m.group(3) != null) {
                    replacement = NAMED_ENTITIES.get(m.group(3));
                } else {
                    int code = m.group(1) != null ? Integer.parseInt(m.group(1)) : Integer.parseInt(m.group(2), 16);
                    boolean valid = code != 0 && code <= 0x10FFFF && (code < 0xD800 || code > 0xDFFF);
                    replacement = valid ? new String(Character.toChars(code)) : m.group();
                }
                m.appendReplacement(sb, Matcher.quoteReplacement(replacement));
            }
            m.appendTail(sb);
            return sb.toString();
        }

        /** Emoji to their padded tokens, as text.py's emoji regex; a loop because a regex class of
         * 150 ranges costs Java's regex engine some 200 microseconds per tweet. */
        private String replaceEmoji(String text) {
            StringBuilder sb = null;
            int n = text.length();
            for (int i = 0; i < n; ) {
                int cp = text.codePointAt(i);
                String replacement = cp >= firstEmoji ? emojiReplacement(cp) : null;
                if (replacement != null && sb == null) {
                    sb = new StringBuilder(n + 16).append(text, 0, i);
                }
                if (replacement != null) {
                    sb.append(replacement);
                } else if (sb != null) {
                    sb.appendCodePoint(cp);
                }
                i += Character.charCount(cp);
            }
            return sb == null ? text : sb.toString();
        }

        private String emojiReplacement(int cp) {
            String known = emoji.get(cp);
            if (known != null) {
                return known;
            }
            for (int[] range : emojiRanges) {
                if (cp >= range[0] && cp <= range[1]) {
                    return " " + EMOJI_TOKEN + " ";
                }
            }
            return null;
        }

        private void normalise(String token, List<String> out) {
            token = squash(token);
            String[] pieces = contractions.get(token);
            if (pieces == null) {
                pieces = token.indexOf('\'') >= 0 ? splitApostrophes(token) : new String[] {token};
            }
            for (String piece : pieces) {
                if (isDecimal(piece)) {
                    out.add(NUMBER_TOKEN);
                    continue;
                }
                if (stopWords.contains(piece)) {
                    continue;
                }
                String lemma = lemmas.getOrDefault(piece, piece);
                if (!stopWords.contains(lemma)) {
                    out.add(lemma);
                }
            }
        }

        private String[] splitApostrophes(String token) {
            for (String clitic : CLITICS) {
                if (token.endsWith(clitic)) {
                    token = token.substring(0, token.length() - clitic.length());
                    break;
                }
            }
            String[] expansion = contractions.get(token);
            if (expansion != null) {
                return expansion;
            }
            if (token.endsWith("n't")) {
                String stem = token.substring(0, token.length() - 3).replace("'", "");
                return stem.isEmpty() ? new String[] {"not"} : new String[] {stem, "not"};
            }
            return new String[] {token.replace("'", "")};
        }

        /** A letter (not a decimal digit) repeated three times or more becomes two, as text.py's _SQUASH_RE. */
        static String squash(String token) {
            StringBuilder sb = null;
            int n = token.length();
            int i = 0;
            while (i < n) {
                int cp = token.codePointAt(i);
                int width = Character.charCount(cp);
                int j = i + width;
                int run = 1;
                while (j < n && token.codePointAt(j) == cp) {
                    j += width;
                    run++;
                }
                boolean squashable = run >= 3 && isAlnum(cp) && !Character.isDigit(cp);
                if (squashable && sb == null) {
                    sb = new StringBuilder(n).append(token, 0, i);
                }
                if (sb != null) {
                    int keep = squashable ? 2 : run;
                    for (int k = 0; k < keep; k++) {
                        sb.appendCodePoint(cp);
                    }
                }
                i = j;
            }
            return sb == null ? token : sb.toString();
        }

        private static boolean isDecimal(String piece) {
            if (piece.isEmpty()) {
                return false;
            }
            for (int i = 0; i < piece.length(); ) {
                int cp = piece.codePointAt(i);
                if (!Character.isDigit(cp)) {
                    return false;
                }
                i += Character.charCount(cp);
            }
            return true;
        }
    }

    /** Prints the tokens of each argument, one line each, for checking the jar by hand. */
    public static void main(String[] args) {
        for (String text : args) {
            System.out.println(String.join(" ", tokenize(text)));
        }
    }
}
