// A plain Java service publishing records with Apache Kafka's own client: what tests/kafka/test_interop.py
// checks the consumer against. Usage: java RecordProducer <bootstrap> <topic> <compression.type> <records-file>
// Each line of the file is one record, tab-separated and base64-encoded so any bytes survive:
//   <key or "-" for null> TAB <value or "-" for a tombstone> [TAB <header-name>:<header-value> ...]
// Prints "<partition> <offset>" per record, in the file's order, after every send is acknowledged.
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class RecordProducer {
    private static byte[] decode(String field) {
        return field.equals("-") ? null : Base64.getDecoder().decode(field);
    }

    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        config.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, args[2]);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.LINGER_MS_CONFIG, "20");  // several records per compressed batch
        config.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, "4194304");
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config)) {
            for (String line : Files.readAllLines(Paths.get(args[3]), StandardCharsets.US_ASCII)) {
                String[] fields = line.split("\t");
                ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(args[1], decode(fields[0]), decode(fields[1]));
                for (int i = 2; i < fields.length; i++) {
                    String[] header = fields[i].split(":", 2);
                    record.headers().add(new String(decode(header[0]), StandardCharsets.UTF_8), decode(header[1]));
                }
                sent.add(producer.send(record));
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata meta = future.get();
                System.out.println(meta.partition() + " " + meta.offset());
            }
        }
    }
}
